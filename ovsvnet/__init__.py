"""ovsvnet: Xen 3.0 style virtual networks (vnets) rebuilt on Open vSwitch."""

__version__ = "0.1.0"
