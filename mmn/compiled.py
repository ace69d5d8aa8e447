"""The compiled training forward of a solo trial (`train.compile`), with a fallback to the eager model.

On CUDA the forward is compiled with `torch.compile(mode="reduce-overhead")`, which replays it as CUDA graphs: the
solo paper-model step is launch-bound there (docs/performance.md). On a CPU it is compiled in the default mode.
Compiling is lazy, Dynamo may compile parts of the model again on later steps (MMN's forward has graph breaks whose
resumptions it recompiles until its limit), and CUDA graphs are recorded on the calls after a compile. So steps run
guarded until a few in a row have compiled nothing: if one raises, the run goes on eagerly from the state before that
step (buffers such as BatchNorm statistics, random streams; the optimizer has not stepped), so that no step is lost
or repeated. Evaluation and the state dict are always the eager module's: compiling wraps the module and shares its
parameters.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

# The torch.compile backend. Tests set "eager" to trace with Dynamo without paying inductor's compile time.
BACKEND = "inductor"
# Steps in a row that compile nothing before steps run unguarded: with CUDA graphs, after a compile one warms up,
# one records and one replays.
SETTLED_STEPS = 3

T = TypeVar("T")


def wanted(setting: str, device: torch.device) -> bool:
    """Whether `train.compile=setting` compiles a solo trial's training forward on `device`."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _graphs_compiled() -> int:
    """Graphs Dynamo has compiled in this process so far, recompilations included."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _reason(error: BaseException) -> str:
    """'Type: message' on one line: the message's first paragraph (Dynamo puts the backend's error on its second
    line), at most 200 characters."""
    paragraph = str(error).strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in paragraph.splitlines() if line.strip())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


class TrainingForward:
    """The forward a training step calls: the compiled model while it works, else the eager one.

    `step(run)` calls `run(forward)` with the forward to use and returns what it returns. `run` sets the gradients
    to None before its backward pass and leaves the optimizer to the caller (after `step` returns), so that a step
    that fails compiled can run again eagerly from the same state.
    """

    def __init__(self, model: torch.nn.Module, setting: str, device: torch.device) -> None:
        self.model, self.device, self.setting = model, device, setting
        self.compiled: Callable[..., Any] | None = None
        self.reason: str | None = None  # why compiling was given up
        self.settled = 0  # steps in a row that compiled nothing
        if wanted(setting, device):
            # mode only for inductor: other backends take no mode
            mode = "reduce-overhead" if device.type == "cuda" and BACKEND == "inductor" else None
            # afresh: a Ray worker runs trials one after another in one process, and the graphs (and CUDA-graph
            # memory) of earlier ones would pile up, and Dynamo stops compiling a code after 8 recompilations
            torch.compiler.reset()
            try:
                self.compiled = torch.compile(model, mode=mode, backend=BACKEND)
            except Exception as error:  # e.g. torch.compile unsupported on this Python
                self._give_up(error)

    def record(self) -> dict[str, Any]:
        """What a trial's record says where train.compile asks for compiling (on, auto): "compiled", and
        "compile_error" when compiling was given up. At off nothing: the record stays as a trial pack member's."""
        if self.setting == "off":
            return {}
        return {"compiled": self.compiled is not None, **({"compile_error": self.reason} if self.reason else {})}

    def step(self, run: Callable[[Callable[..., Any]], T]) -> T:
        """`run(forward)`: guarded while Dynamo still compiles, falling back to the eager model if it raises."""
        if self.compiled is None:
            return run(self.model)
        if self.settled >= SETTLED_STEPS:
            return run(self.compiled)
        state, graphs = self._state(), _graphs_compiled()
        try:
            result = run(self.compiled)
        except Exception as error:  # no C compiler, a Dynamo or inductor error, a CUDA-graph capture error
            self._give_up(error)
            self._restore(state)
            return run(self.model)
        self.settled = self.settled + 1 if _graphs_compiled() == graphs else 0
        return result

    def _give_up(self, error: BaseException) -> None:
        self.compiled, self.reason = None, _reason(error)
        torch.compiler.reset()  # what the failed compile holds
        print(f"[mmn] train.compile: {self.reason}; training eagerly", file=sys.stderr, flush=True)

    def _state(self) -> dict[str, Any]:
        """What a failed step may have changed before the optimizer steps: buffers (BatchNorm statistics) and the
        random streams (dropout, drop-path). Gradients need nothing: the step sets them to None before backward."""
        cuda = self.device.type == "cuda"
        return {"buffers": {name: buffer.detach().clone() for name, buffer in self.model.named_buffers()},
                "rng": torch.get_rng_state(), "rng_cuda": torch.cuda.get_rng_state(self.device) if cuda else None}

    def _restore(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, buffer in self.model.named_buffers():
                buffer.copy_(state["buffers"][name])
        torch.set_rng_state(state["rng"])
        if state["rng_cuda"] is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
