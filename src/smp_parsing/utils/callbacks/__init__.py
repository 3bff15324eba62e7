"""Lightning callbacks of the project (each in its own module)."""

from smp_parsing.utils.callbacks.atomic_checkpoint import AtomicModelCheckpoint
from smp_parsing.utils.callbacks.buffer_broadcast import BroadcastBuffers
from smp_parsing.utils.callbacks.image_logger import ParsingImageLogger
from smp_parsing.utils.callbacks.inference_timer import InferenceTimer
from smp_parsing.utils.callbacks.mir_freeze import MIRStageFreeze
from smp_parsing.utils.callbacks.nonfinite_guard import NonFiniteLossError, NonFiniteLossGuard
from smp_parsing.utils.callbacks.prediction_writer import PredictionDirWriter
from smp_parsing.utils.callbacks.preemption import Preempted, PreemptionCheckpoint
from smp_parsing.utils.callbacks.rank_seed import PerRankSeed
from smp_parsing.utils.callbacks.rng_state import RNGStateCheckpoint
from smp_parsing.utils.callbacks.wandb_panels import WandbPanels

__all__ = [
    "AtomicModelCheckpoint",
    "BroadcastBuffers",
    "InferenceTimer",
    "MIRStageFreeze",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "ParsingImageLogger",
    "PerRankSeed",
    "PredictionDirWriter",
    "Preempted",
    "PreemptionCheckpoint",
    "RNGStateCheckpoint",
    "WandbPanels",
]
