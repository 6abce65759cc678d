"""hamfast: HAM, the Hypernetwork for Absent Modalities, with a fused grouped-convolution op.

Submodules: ``hamfast.ops`` (the op), ``hamfast.models``, ``hamfast.data``,
``hamfast.training``, ``hamfast.experiments``, ``hamfast.cli``. Only ``ops`` is imported eagerly, so
``import hamfast`` works on a machine without monai and nibabel.
"""
__version__ = "0.1.0"

from hamfast import ops  # noqa: E402,F401
from hamfast.ops import GroupPlan, grouped_conv2d, grouped_conv2d_reference, make_group_plan  # noqa: E402,F401
