"""Search spaces for MMN: YAML files in this folder and the loader that turns one into an Optuna define-by-run
function. See `search_spaces.loader` for the file format."""
from search_spaces.loader import (PARAMETER_TYPES, Parameter, SearchSpace, SearchSpaceError, list_search_spaces,
                                  load_search_space)

__all__ = ["PARAMETER_TYPES", "Parameter", "SearchSpace", "SearchSpaceError", "list_search_spaces",
           "load_search_space"]
