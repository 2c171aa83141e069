"""pynetdicom as the second, independent network peer of plateqc's tests.

Modes (each prints one JSON line with what happened):
  concurrent PORT N FILE...   N associations at once, files dealt round-robin; statuses per file
  hold PORT N                 opens N associations, holds them 3 s; reports which were accepted
  abort PORT FILE             starts a C-STORE of FILE with a small PDU and aborts mid-transfer
  garbage PORT                an association, then a P-DATA PDU of junk bytes
  mismatch PORT FILE          on one association: FILE announced under another SOP Instance UID
                              than its data set's, then FILE as it is; both statuses
  strict-scp PORT AET DIR SECS  a storage SCP that rejects associations not calling it AET (as a
                              PACS checking its called AE title does) and takes uncompressed
                              syntaxes only (pynetdicom's default), storing into DIR/<uid>.dcm,
                              for SECS seconds or until killed
"""
import json
import socket
import sys
import threading
import time

from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    DigitalIntraOralXRayImageStorageForPresentation as IO_PRES,
    DigitalIntraOralXRayImageStorageForProcessing as IO_PROC,
    Verification,
)

HOST = "127.0.0.1"


def make_ae(max_pdu=16384):
    ae = AE(ae_title="PYNET")
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = 10
    ae.dimse_timeout = 30
    ae.network_timeout = 30
    return ae


def contexts_for(ae, datasets):
    seen = set()
    for ds in datasets:
        key = (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        if key not in seen:
            seen.add(key)
            ae.add_requested_context(key[0], [key[1]])


def concurrent(port, n, files):
    datasets = [dcmread(f) for f in files]
    results = {}
    lock = threading.Lock()

    def worker(k):
        ae = make_ae()
        mine = datasets[k::n]
        contexts_for(ae, mine)
        assoc = ae.associate(HOST, port, ae_title="PLATEQC")
        if not assoc.is_established:
            with lock:
                for ds in mine:
                    results[str(ds.SOPInstanceUID)] = "no-association"
            return
        for ds in mine:
            st = assoc.send_c_store(ds)
            with lock:
                results[str(ds.SOPInstanceUID)] = int(st.Status) if "Status" in st else "no-response"
        assoc.release()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"statuses": results}))


def hold(port, n):
    accepted = []
    assocs = []
    for _ in range(n):
        ae = make_ae()
        ae.add_requested_context(Verification)
        a = ae.associate(HOST, port, ae_title="PLATEQC")
        accepted.append(bool(a.is_established))
        assocs.append(a)
    time.sleep(3)
    for a in assocs:
        if a.is_established:
            a.release()
    print(json.dumps({"accepted": accepted}))


def abort(port, path):
    # An 8 MB plate sent in 4 KB PDUs, aborted after the first few dozen data PDUs.
    from pydicom.uid import generate_uid

    ds = dcmread(path)
    ds.Rows, ds.Columns = 2000, 2000
    ds.PixelData = bytes(2000 * 2000 * 2)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ae = make_ae(max_pdu=4096)
    contexts_for(ae, [ds])
    sent = [0]
    aborted = [False]

    def on_sent(event):
        # Called on the association's own thread after each whole PDU, so an A-ABORT written
        # here lands on a PDU boundary, 40 PDUs (160 KB) into an 8 MB data set.
        sent[0] += 1
        if sent[0] == 40 and not aborted[0]:
            sock = event.assoc.dul.socket.socket
            sock.sendall(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            sock.shutdown(socket.SHUT_RDWR)
            aborted[0] = True

    assoc = ae.associate(HOST, port, ae_title="PLATEQC", evt_handlers=[(evt.EVT_PDU_SENT, on_sent)])
    assert assoc.is_established
    try:
        st = assoc.send_c_store(ds)
        status = int(st.Status) if "Status" in st else None
    except Exception as e:  # the closed socket may surface as an exception
        status = repr(e)
    print(json.dumps({"status": status, "aborted": aborted[0], "pdus_sent": sent[0], "uid": str(ds.SOPInstanceUID)}))


def mismatch(port, path):
    import os
    import tempfile

    from pynetdicom import _config

    # Sent from a file, pynetdicom announces the file meta group's UIDs in the command and
    # sends the data set's bytes as they are: a meta group naming another instance makes the
    # command and the data set disagree.
    _config.STORE_SEND_CHUNKED_DATASET = True
    ds = dcmread(path)
    real = str(ds.SOPInstanceUID)
    # Another valid UID of the same length (its last digit changed).
    ds.file_meta.MediaStorageSOPInstanceUID = real[:-1] + ("1" if real[-1] != "1" else "2")
    fd, liar = tempfile.mkstemp(suffix=".dcm")
    os.close(fd)
    # Written as it is: pydicom's file-format enforcement would align the meta group again.
    ds.save_as(liar)
    ae = make_ae()
    contexts_for(ae, [ds])
    assoc = ae.associate(HOST, port, ae_title="PLATEQC")
    assert assoc.is_established
    out = {"uid": real}
    for key, f in (("mismatch", liar), ("match", path)):
        st = assoc.send_c_store(f)
        out[key] = int(st.Status) if "Status" in st else "no-response"
    assoc.release()
    os.unlink(liar)
    print(json.dumps(out))


def garbage(port):
    ae = make_ae()
    ae.add_requested_context(Verification)
    assoc = ae.associate(HOST, port, ae_title="PLATEQC")
    assert assoc.is_established
    # Write junk straight onto the association's socket: a P-DATA-TF header whose item
    # lengths lie about the bytes that follow.
    sock = assoc.dul.socket.socket
    sock.sendall(bytes([0x04, 0, 0, 0, 0, 12, 0, 0, 0xFF, 0xFF, 1, 3]) + b"\x00" * 6)
    time.sleep(1)
    print(json.dumps({"aborted_by_peer": assoc.is_aborted or not assoc.is_established}))


def strict_scp(port, aet, folder, secs):
    from pynetdicom import AllStoragePresentationContexts
    ae = AE(ae_title=aet)
    ae.require_called_aet = True
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    stored = []

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        uid = event.request.AffectedSOPInstanceUID
        ds.save_as(f"{folder}/{uid}.dcm", enforce_file_format=True)
        stored.append(uid)
        return 0x0000

    server = ae.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    print("listening", flush=True)
    try:
        time.sleep(secs)
    finally:
        server.shutdown()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "concurrent":
        concurrent(port, int(sys.argv[3]), sys.argv[4:])
    elif mode == "hold":
        hold(port, int(sys.argv[3]))
    elif mode == "abort":
        abort(port, sys.argv[3])
    elif mode == "mismatch":
        mismatch(port, sys.argv[3])
    elif mode == "garbage":
        garbage(port)
    elif mode == "strict-scp":
        strict_scp(port, sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        sys.exit(f"unknown mode {mode}")
