"""Example business cases, runnable in the demo and by workers (``STAGEFLOW_CASES=business_cases``)."""

from business_cases.order import EcommerceOrder

CASES = [EcommerceOrder]

__all__ = ["EcommerceOrder", "CASES"]
