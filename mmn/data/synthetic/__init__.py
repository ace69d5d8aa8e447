"""A synthetic micro-action set in the MA-52 skeleton layout, written in the release's pickle format.

Every clip shows one person seated facing the camera, as in MA-52's interviews, performing one of the 52 classes.
The body is a small 3D kinematic model (trunk, head, two-link arms and legs solved by inverse kinematics, hands with
five fingertips, feet) projected onto the image, so bones keep plausible lengths whatever the motion. A clip's
individual (proportions, resting posture, camera) is drawn independently of its class, and class motions are
oscillations about, or excursions from and back to, that resting posture; what an excursion adds to the clip's
mean is taken back out of the resting posture (`Difficulty.mean_compensation`), within plausible limits. So the mean
posture of a clip says little about its class while the motion says much. Free hands fidget independently of the
class. Pose-estimator jitter, per-clip joint offsets and short runs of missing joints (zeros, as pose estimators
write them) are added last. The knobs that set how hard the task is live in `Difficulty`.

The pieces, in the order a clip passes through them:
- `difficulty`: the knobs, and how their defaults were chosen;
- `geometry`: rotations, vectors, two-link inverse kinematics, smooth envelopes;
- `body`: the person's proportions, the per-frame controls, reaches, the resting posture and idle motion;
- `clip`: the context a motion program works in (time, controls, random draws scaled by amplitude and speed);
- `motions`: one registered motion program per MA-52 class, and the contact motions they share;
- `hands`: free hands fidgeting, finger shapes held at a goal;
- `pose`: controls to the 3D positions of the 44 joints;
- `render`: one clip to pixels, with the pose estimator's noise and missing joints;
- `sets`: clips per split, the files of a set, and the cache of generated sets.
"""
from mmn.data.formats import SPLITS

from .body import FPS
from .difficulty import DEFAULT_DIFFICULTY, Difficulty
from .pose import NUM_JOINTS
from .render import MAX_FRAMES, MIN_FRAMES, render_clip
from .sets import (
    DEFAULT_CLIPS_PER_CLASS,
    GENERATOR_VERSION,
    MANIFEST,
    cache_name,
    ensure_synthetic,
    generate,
    ma52_sized_counts,
    split_counts,
)

__all__ = [
    "DEFAULT_CLIPS_PER_CLASS", "DEFAULT_DIFFICULTY", "FPS", "GENERATOR_VERSION", "MANIFEST", "MAX_FRAMES",
    "MIN_FRAMES", "NUM_JOINTS", "SPLITS", "Difficulty", "cache_name", "ensure_synthetic", "generate",
    "ma52_sized_counts", "render_clip", "split_counts",
]
