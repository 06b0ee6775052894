"""Akash Network: read SDL into fabric jobs, and act as an Akash provider (host orders, bid, run leases)."""

from ceti.networks.akash.adapter import AkashAdapter
from ceti.networks.akash.errors import SdlError, SdlProblem
from ceti.networks.akash.jobs import AkashJob, sdl_jobs
from ceti.networks.akash.market import (
    FreeNode,
    NoFit,
    Order,
    Placement,
    ProviderTerms,
    orders_from_sdl,
    place_order,
)
from ceti.networks.akash.price_script import PriceScriptError, ScriptPricing
from ceti.networks.akash.pricing import Bid, DenomRates, NoBid, ScalePricing, decide_bid
from ceti.networks.akash.sdl import Sdl, load_sdl_file, parse_sdl

__all__ = [
    "AkashAdapter", "AkashJob", "Bid", "DenomRates", "FreeNode", "NoBid", "NoFit", "Order", "Placement",
    "PriceScriptError", "ProviderTerms", "ScalePricing", "ScriptPricing", "Sdl", "SdlError", "SdlProblem",
    "decide_bid", "load_sdl_file", "orders_from_sdl", "parse_sdl", "place_order", "sdl_jobs",
]
