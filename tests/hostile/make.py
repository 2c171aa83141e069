"""Writes the hostile regression files of this folder from the fixtures in tests/fixtures.

Each file is named after the bug it pins and is a real fixture with a few header bytes
changed, so it is small and its provenance is this script (run with the test venv:
`.venv-test/bin/python tests/hostile/make.py`). The nested-sequence bomb (4 MB) is not kept
here: `tests/it/hostile.rs` builds it at test time. `make test` replays every file here
(`tests/it/hostile.rs`): none may stop `scan` or the daemon, each must give one row.
"""

import io
import pathlib
import struct

import pydicom

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"


def read(name):
    return (FIXTURES / name).read_bytes()


def pixel_fragment(data):
    """Offset and length of the first data fragment of the encapsulated Pixel Data."""
    ds = pydicom.dcmread(io.BytesIO(data))
    elem = ds["PixelData"]
    start = data.rfind(b"\xe0\x7f\x10\x00")
    assert start > 0
    pos = start + 12  # tag, VR OB, reserved, undefined length
    item_len = struct.unpack_from("<I", data, pos + 4)[0]
    pos += 8 + item_len  # the basic offset table
    frag_len = struct.unpack_from("<I", data, pos + 4)[0]
    assert elem.is_undefined_length
    return pos + 8, frag_len


def patch_marker(data, marker, edit):
    """Applies `edit(bytearray, offset_of_segment_payload)` to the first `marker` segment of
    the first pixel data fragment."""
    out = bytearray(data)
    frag, length = pixel_fragment(data)
    seg = out.find(marker, frag, frag + length)
    assert seg > 0, marker
    edit(out, seg + 4)  # marker (2 bytes) and segment length (2 bytes)
    return bytes(out)


def set_dims_be(rows, cols, at_rows, at_cols):
    def edit(buf, payload):
        struct.pack_into(">H", buf, payload + at_rows, rows)
        struct.pack_into(">H", buf, payload + at_cols, cols)

    return edit


def write(name, data):
    (HERE / name).write_bytes(data)
    print(f"{name}: {len(data)} bytes")


def main():
    # JPEG baseline: SOF0 is P (1), Y (2), X (2): the decoder sized its output from it.
    write(
        "jpeg_sof_65500x65500.dcm",
        patch_marker(read("13_jpeg_baseline_u8.dcm"), b"\xff\xc0", set_dims_be(65500, 65500, 1, 3)),
    )
    # JPEG lossless SV1 (SOF3), 16-bit.
    write(
        "jpeg_lossless_sof3_65500x65500.dcm",
        patch_marker(
            read("15_jpeg_lossless_sv1_u16.dcm"), b"\xff\xc3", set_dims_be(65500, 65500, 1, 3)
        ),
    )
    # JPEG-LS: SOF55 is P (1), Y (2), X (2): CharLS allocated from it (8 GB).
    write(
        "jpegls_sof55_65500x65500.dcm",
        patch_marker(read("08_jpegls_u16.dcm"), b"\xff\xf7", set_dims_be(65500, 65500, 1, 3)),
    )

    # JPEG 2000: SIZ is Rsiz (2), Xsiz (4), Ysiz (4), ...: openjp2 allocated from it and
    # dicom-rs copied its samples into a Rows x Columns buffer unchecked.
    def siz(buf, payload):
        struct.pack_into(">II", buf, payload + 2, 65500, 65500)

    write("j2k_siz_65500x65500.dcm", patch_marker(read("11_j2k_lossless_u8.dcm"), b"\xff\x51", siz))

    # JPEG 2000 with tiles of one pixel: 95 361 tiles for a 399 x 239 plate.
    def tiny_tiles(buf, payload):
        struct.pack_into(">II", buf, payload + 18, 1, 1)

    write(
        "j2k_siz_one_pixel_tiles.dcm",
        patch_marker(read("11_j2k_lossless_u8.dcm"), b"\xff\x51", tiny_tiles),
    )

    # JPEG 2000 whose QCD has no guard bits and a reserved style (Sqcd 0x13, was 0x40): openjp2
    # read exponents for 8 of 16 subbands, left the others 0 and computed -1 bit-planes for
    # them, an integer overflow. Found by `make fuzz` (decode_file), this very byte.
    def no_guard_bits(buf, payload):
        buf[payload] = 0x13

    write(
        "j2k_qcd_no_guard_bits.dcm",
        patch_marker(read("11_j2k_lossless_u8.dcm"), b"\xff\x5c", no_guard_bits),
    )

    # RLE: a segment table claiming 15 segments (offsets of zero) in a 16-bit plate.
    data = bytearray(read("06_rle_s12.dcm"))
    frag, _ = pixel_fragment(bytes(data))
    struct.pack_into("<I", data, frag, 15)
    write("rle_header_15_segments.dcm", bytes(data))

    # RLE: segment 2 moved to the fragment's last two bytes (a literal of one byte), so it
    # unpacks to 1 byte where a plane is 60 738: dicom-rs indexed past it and panicked. Found by
    # `make fuzz` (decode_file).
    data = bytearray(read("06_rle_s12.dcm"))
    frag, length = pixel_fragment(bytes(data))
    struct.pack_into("<I", data, frag + 8, length - 2)
    data[frag + length - 2 : frag + length] = b"\x00\x00"
    write("rle_segment_shorter_than_plane.dcm", bytes(data))


if __name__ == "__main__":
    main()
