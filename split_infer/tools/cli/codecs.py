"""``split-infer codecs``: the feature codecs and example specs."""

from __future__ import annotations

import argparse

from split_infer.tools.cli._api import VerbExtension

__all__ = ["CodecsVerb"]


class CodecsVerb(VerbExtension):
    """List the tensor and byte stages a codec spec can combine, and example specs."""

    HELP = "list feature codecs and example specs"
    DESCRIPTION = ("List the tensor stages and byte stages a codec spec combines "
                   "(TENSOR[:k=v,...][+BYTE[:k=v,...]]) and example specs.")

    def main(self, args: argparse.Namespace) -> int:
        """Print the listing."""
        from split_infer.codecs import list_codecs

        listing = list_codecs()
        if isinstance(listing, dict):
            for key, values in listing.items():
                print(f"{key}:")
                for value in values:
                    print(f"  {value}")
        else:
            for value in listing:
                print(value)
        return 0
