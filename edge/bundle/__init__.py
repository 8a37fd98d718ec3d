"""Signed bundles: what crosses from the build side to the gateway (gateway side: no torch)."""

from edge.bundle.package import Bundle, BundleError, open_bundle, write_bundle
from edge.bundle.signing import SignatureError, generate_keypair

__all__ = ["Bundle", "BundleError", "SignatureError", "generate_keypair", "open_bundle", "write_bundle"]
