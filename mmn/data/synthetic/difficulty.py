"""The knobs that set how hard the synthetic task is, and how their defaults were chosen."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difficulty:
    """How hard the synthetic task is; every field scales one source of variation.

    The defaults trade two demands against each other. The `quick` budget should learn much in two minutes on a
    2-core CPU, which wants little nuisance; a clip's mean posture should say little about its class, which wants
    each person's resting posture to vary widely (large motions leave traces in the mean that the resting posture
    cannot always take back within a seated body's reach). Measured with tests/test_synthetic.py's ridge
    classifiers (val Top-1 on mean posture / motion features, chance 1.9%) and the quick budget (val Top-1, 8
    training seeds on one CPU thread each): the first defaults (amplitude 0.7-1.3, jitter 0.004, posture, idle and
    proportions 1.0, camera yaw 25 deg) left the quick budget near 8%; these give 11% / 58% and 52-59%.
    Posture 1.0 would give 15-16% on mean posture; posture 0.1 gave 59-60% on the earlier 5-epoch, 16-frame quick
    budget but 43% on mean posture.
    The classes whose motions leak most into the mean (large turns and bends, hands held high) are kept within
    what the spread can hide: turns and bends moderate, `rising up` clips that may begin already risen.
    """

    jitter: float = 0.0005  # pose-estimator noise, std in body heights (about 0.2 px for a 400 px person)
    bias: float = 0.0005  # pose-estimator offset of each joint that lasts the whole clip, std in body heights
    missing_prob: float = 0.03  # chance that a clip has short runs of missing (zeroed) joints
    amplitude: tuple[float, float] = (1.3, 1.8)  # range of the random factor on each clip's motion amplitude
    speed: tuple[float, float] = (0.8, 1.25)  # range of the random factor on motion speed
    posture: float = 1.25  # scale of the individual resting-posture randomisation
    proportions: float = 0.2  # scale of the individual body-proportion randomisation
    idle: float = 0.05  # scale of class-independent idle motion (breathing, sway, drifting hands)
    camera_roll_deg: float = 5.0  # in-plane camera rotation, uniform in +-this
    camera_yaw_deg: float = 15.0  # viewing angle around the person, uniform in +-this
    mean_compensation: float = 1.0  # share of a clip's mean excursion moved into its resting posture
    fidget: float = 0.15  # chance that a hand the class leaves free rests on the chin or shifts its place


DEFAULT_DIFFICULTY = Difficulty()
