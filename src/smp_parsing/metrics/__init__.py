"""Multi-human parsing metrics: AP^p_50, AP^p_vol, PCP_50 and mIoU (official MHP v2 protocol)."""

from smp_parsing.metrics.functional import evaluate_parsing
from smp_parsing.metrics.parsing_metrics import ParsingMetrics

__all__ = ["ParsingMetrics", "evaluate_parsing"]
