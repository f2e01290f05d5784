"""Component placement: device sets per component and the placement mode."""

from rlinf.placement.placement import COMPONENTS, Placement, build_placement, parse_devices

__all__ = ["COMPONENTS", "Placement", "build_placement", "parse_devices"]
