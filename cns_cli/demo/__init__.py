"""An offline demo world for `cns`: procedural 64x64 images of coloured objects in a few scenes, with captions
from a small grammar (`world`), plus distinctive individuals that play the part of a user's personal
concepts (`individuals`). Pure numpy + PIL: no torch, no fonts, no files outside this package."""
