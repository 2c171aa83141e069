"""Writes tests/it/support/jpeg_lossless_p14_predictor5.dcm: a 12-bit JPEG lossless process 14
file with predictor 5 (not SV1), the one lossless variant the generator does not write.
Needs imagecodecs (models/requirements-synth.txt). Run: models/.venv/bin/python this_file."""
import imagecodecs
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, generate_uid

rng = np.random.default_rng(57)
img = (np.add.outer(np.arange(96), np.arange(80)) * 40 + rng.integers(0, 300, (96, 80))).astype(np.uint16) & 0x0FFF
enc = imagecodecs.jpeg8_encode(img, lossless=True, predictor=5, bitspersample=12)
assert (imagecodecs.jpeg8_decode(enc) == img).all()
ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.57")
ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.3"
uid = generate_uid(entropy_srcs=["plateqc-process14-predictor5"])
ds.file_meta.MediaStorageSOPInstanceUID = uid
ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.3"
ds.SOPInstanceUID = uid
ds.StudyInstanceUID = generate_uid(entropy_srcs=["plateqc-p14-study"])
ds.SeriesInstanceUID = generate_uid(entropy_srcs=["plateqc-p14-series"])
ds.Modality = "IO"
ds.PatientID = "SYNTH-P14"
ds.PatientName = "SYNTH^PROCESS14"
ds.Rows, ds.Columns = img.shape
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
ds.PixelData = encapsulate([enc])
ds["PixelData"].VR = "OB"
out = "tests/it/support/jpeg_lossless_p14_predictor5.dcm"
ds.save_as(out, enforce_file_format=True)
assert (pydicom.dcmread(out).pixel_array == img).all()
