#!/usr/bin/env python3
"""Regenerate the image fixtures under tests/data/photos and tests/data/odd.

The fixtures are committed; this script documents exactly how they were made and
rebuilds them when needed. Sources (all freely licensed, see tests/data/README.md):

  * scikit-image's bundled sample data (the `skimage/data/` folder of the wheel),
  * Debian package golang-1.19-src  (Go's image/testdata and PngSuite),
  * Debian package libjxl-testdata  (CC0 photos from raw.pixls.us / wesaturate.com).

Usage: scripts/make_fixtures.py [--go-src DIR] [--jxl-testdata DIR]
Needs Pillow (with WebP) and scikit-image installed in the running Python.
"""
import argparse
import io
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "tests" / "data" / "photos"
ODD = REPO / "tests" / "data" / "odd"

MAX_SIDE = 512
JPEG_QUALITY = 90
EXIF_ORIENTATION_TAG = 0x0112


def shrink(im: Image.Image) -> Image.Image:
    """Reduce so the longer side is at most MAX_SIDE (area filter, good quality)."""
    w, h = im.size
    if max(w, h) <= MAX_SIDE:
        return im
    scale = MAX_SIDE / max(w, h)
    return im.resize((round(w * scale), round(h * scale)), Image.LANCZOS)


def save_jpeg(im: Image.Image, dest: Path, **kw) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.convert("RGB").save(dest, "JPEG", quality=JPEG_QUALITY, optimize=True, **kw)


def make_photos(skdata: Path, jxl: Path) -> None:
    if PHOTOS.exists():
        shutil.rmtree(PHOTOS)
    load = lambda p: shrink(Image.open(p).convert("RGB"))
    save_jpeg(load(skdata / "astronaut.png"), PHOTOS / "astronaut.jpg")
    save_jpeg(load(skdata / "rocket.jpg"), PHOTOS / "rocket.jpg")
    save_jpeg(load(skdata / "chelsea.png"), PHOTOS / "animals" / "chelsea.jpg")
    save_jpeg(load(skdata / "hubble_deep_field.jpg"), PHOTOS / "space" / "hubble_deep_field.jpg")
    save_jpeg(load(skdata / "retina.jpg"), PHOTOS / "medical" / "retina.jpg")
    wes = jxl / "external" / "wesaturate" / "500px"
    save_jpeg(load(wes / "tmshre_riaphotographs_srgb8.png"), PHOTOS / "plants" / "tulips.jpg")
    save_jpeg(load(wes / "cvo9xd_keong_macan_srgb8.png"), PHOTOS / "landscape" / "coast.jpg")
    # The one PNG photo.
    load(skdata / "coffee.png").save(PHOTOS / "coffee.png", optimize=True)

    # EXIF orientation 6 means "the stored pixels must be rotated 90 degrees clockwise
    # for display". Store the upright rocket rotated 90 degrees counter-clockwise, so a
    # reader that honours the tag sees the upright (landscape) rocket and one that
    # ignores it sees a portrait image lying on its side.
    upright = load(skdata / "rocket.jpg")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    save_jpeg(stored, PHOTOS / "exif" / "rocket_orientation6.jpg", exif=exif.tobytes())


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit palette PNG of one colour: tiny on disk, huge when decoded to RGB8."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    # IHDR: width, height, bit depth 1, colour type 3 (palette), deflate, filter 0, no interlace.
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "None" + packed indices (all 0)
    z = zlib.compressobj(9)
    idat = bytearray()
    for _ in range(height):
        idat += z.compress(row)
    idat += z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", bytes([200, 30, 30]))
            + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b""))


def make_odd(skdata: Path, go_src: Path, jxl: Path) -> None:
    if ODD.exists():
        shutil.rmtree(ODD)
    ODD.mkdir(parents=True)
    gotest = go_src / "image" / "testdata"
    pngsuite = go_src / "image" / "png" / "testdata" / "pngsuite"
    copies = {
        gotest / "video-001.cmyk.jpeg": "cmyk.jpg",
        gotest / "video-001.rgb.jpeg": "adobe_rgb_transform.jpg",
        gotest / "video-001.progressive.jpeg": "progressive.jpg",
        gotest / "video-005.gray.jpeg": "gray.jpg",
        gotest / "video-001.q50.411.jpeg": "subsampling_411.jpg",
        gotest / "video-001.q50.410.jpeg": "subsampling_410.jpg",
        gotest / "video-001.interlaced.gif": "interlaced.gif",
        gotest / "video-001.progressive.truncated.jpeg": "progressive_truncated.jpg",
        pngsuite / "basn3p08.png": "palette.png",
        pngsuite / "basn3p08-trns.png": "palette_trns.png",
        pngsuite / "basn2c16.png": "rgb16.png",
        pngsuite / "basn0g16.png": "gray16.png",
        pngsuite / "basn4a08.png": "gray_alpha.png",
        pngsuite / "basn6a08.png": "rgba.png",
        jxl / "external" / "raw.pixls" / "DJI-FC6310-16bit_709_v4_krita.png": "photo_rgb16.png",
    }
    for src, name in copies.items():
        shutil.copyfile(src, ODD / name)

    chelsea = shrink(Image.open(skdata / "chelsea.png").convert("RGB"))
    small = chelsea.resize((chelsea.width // 2, chelsea.height // 2), Image.LANCZOS)
    small.save(ODD / "photo.webp", "WEBP", quality=85)
    small.save(ODD / "photo.bmp", "BMP")
    small.save(ODD / "photo.tiff", "TIFF", compression="tiff_lzw")

    buf = io.BytesIO()
    chelsea.save(buf, "JPEG", quality=JPEG_QUALITY)
    data = buf.getvalue()
    (ODD / "truncated.jpg").write_bytes(data[: len(data) * 40 // 100])
    # Cut inside the header segments, before the first scan (SOS): no decoder can
    # produce pixels from it.
    (ODD / "truncated_header.jpg").write_bytes(data[: data.index(b"\xff\xda") // 2])
    (ODD / "empty.jpg").write_bytes(b"")
    (ODD / "notes.jpg").write_text(
        "Shopping list for the weekend.\n"
        "Milk, bread, two dozen eggs and a bag of coffee beans.\n"
        "Remember to call the plumber about the kitchen tap.\n"
    )
    (ODD / "bomb.png").write_bytes(bomb_png(25000, 25000))


# Expected outcome of decoding each odd fixture: "ok", "error", or "either" (see
# tests/data/README.md for why). Width and height are the decoded size for "ok".
ODD_EXPECTED = {
    "adobe_rgb_transform.jpg": ("ok", 150, 103),
    "bomb.png": ("error", None, None),
    "cmyk.jpg": ("ok", 150, 103),
    "empty.jpg": ("error", None, None),
    "gray.jpg": ("ok", 150, 103),
    "gray16.png": ("ok", 32, 32),
    "gray_alpha.png": ("ok", 32, 32),
    "interlaced.gif": ("ok", 150, 103),
    "notes.jpg": ("error", None, None),
    "palette.png": ("ok", 32, 32),
    "palette_trns.png": ("ok", 32, 32),
    "photo.bmp": ("ok", 225, 150),
    "photo.tiff": ("ok", 225, 150),
    "photo.webp": ("ok", 225, 150),
    "photo_rgb16.png": ("ok", 64, 64),
    "progressive.jpg": ("ok", 150, 103),
    "progressive_truncated.jpg": ("either", 150, 103),
    "rgb16.png": ("ok", 32, 32),
    "rgba.png": ("ok", 32, 32),
    "subsampling_410.jpg": ("ok", 150, 103),
    "subsampling_411.jpg": ("ok", 150, 103),
    "truncated.jpg": ("either", 451, 300),
    "truncated_header.jpg": ("error", None, None),
}


# Go's decoded reference images ("goldens") for some odd fixtures: file in odd/ ->
# golden in Go's image/testdata. Go's own test accepts 8/255 per channel for JPEG and
# 64/255 for GIF; other decoders upsample chroma differently, so the Pillow difference is
# recorded next to each golden as a yardstick.
GO_GOLDENS = {
    "adobe_rgb_transform.jpg": "video-001.rgb.png",
    "cmyk.jpg": "video-001.cmyk.png",
    "progressive.jpg": "video-001.png",
    "interlaced.gif": "video-001.png",
    "gray.jpg": "video-005.gray.png",
    "progressive_truncated.jpg": "video-001.progressive.truncated.png",
}


def write_expectations(go_src: Path) -> None:
    import json

    import numpy as np

    decoded = REPO / "tests" / "data" / "reference" / "decoded"
    if decoded.exists():
        shutil.rmtree(decoded)
    decoded.mkdir(parents=True)
    goldens = {}
    for name, golden in GO_GOLDENS.items():
        shutil.copyfile(go_src / "image" / "testdata" / golden, decoded / golden)
        want = np.asarray(Image.open(decoded / golden).convert("RGB"), dtype=np.int16)
        got = np.asarray(Image.open(ODD / name).convert("RGB"), dtype=np.int16)
        diff = np.abs(want - got)
        goldens[name] = {"golden": f"decoded/{golden}",
                         "pillow_max_abs_diff": int(diff.max()),
                         "pillow_mean_abs_diff": round(float(diff.mean()), 2)}

    names = sorted(p.name for p in ODD.iterdir())
    if names != sorted(ODD_EXPECTED):
        raise SystemExit(f"odd fixtures and ODD_EXPECTED differ: {sorted(set(names) ^ set(ODD_EXPECTED))}")
    # `expect` is what decoders in general do; `labelflow` is what labelflow does: it
    # refuses a JPEG cut before its end-of-image marker rather than label a half-grey
    # picture, and accepts a progressive JPEG that ends properly after fewer scans.
    labelflow = {"truncated.jpg": "error", "progressive_truncated.jpg": "ok"}
    rows = [{"file": n, "expect": e, "width": w, "height": h, **goldens.get(n, {}),
             "labelflow": labelflow.get(n, e)}
            for n, (e, w, h) in sorted(ODD_EXPECTED.items())]
    out = REPO / "tests" / "data" / "reference" / "odd_expected.json"
    out.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")


def main() -> None:
    import skimage

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go-src", type=Path, default=Path("/usr/share/go-1.19/src"))
    ap.add_argument("--jxl-testdata", type=Path, default=Path("/usr/share/libjxl-testdata"))
    args = ap.parse_args()
    skdata = Path(skimage.__file__).parent / "data"
    make_photos(skdata, args.jxl_testdata)
    make_odd(skdata, args.go_src, args.jxl_testdata)
    write_expectations(args.go_src)
    for root in (PHOTOS, ODD):
        for p in sorted(root.rglob("*")):
            if p.is_file():
                print(f"{p.stat().st_size:>9}  {p.relative_to(REPO)}")


if __name__ == "__main__":
    main()
