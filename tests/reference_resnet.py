"""The hand-written reference ResNet now lives in archc.bench.reference (`archc bench` uses it).

Re-exported here so that tests can keep importing `tests.reference_resnet`.
"""

from archc.bench.reference import *  # noqa: F403
