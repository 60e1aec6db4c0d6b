"""TEMPORARY stand-ins for the formats branch (removed at its merge)."""

from __future__ import annotations


def check_sparsectrl_fits_base(sw, unet_config, source) -> None:
    raise NotImplementedError


def build_sparsectrl(sw, dtype=None, device=None):
    raise NotImplementedError


def read_image_encoder(folder):
    raise NotImplementedError


def check_image_encoder_fits(ipw, encoder, folder) -> None:
    raise NotImplementedError


def default_image_encoder(ip_path):
    raise NotImplementedError


def check_ip_adapter_fits_base(ipw, unet_config, source) -> None:
    raise NotImplementedError
