"""smm-gateway: one SMM API v2 endpoint over many upstream SMM providers."""

__version__ = "0.1.0"
