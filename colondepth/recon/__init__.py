"""recon subpackage."""
