#!/usr/bin/env python3
"""A shadowcopy writer in Python: the protocol is language-neutral in fact, not only in intent.

This writer uses nothing of the Rust code base. It talks to shadowcopyd with grpcio from PyPI and
stubs that grpc_tools.protoc generated from crates/protocol/proto (run generate.sh first), and it
follows docs/protocol.md:

- every call carries the version header ``x-shadowcopy-protocol: 1.0`` as metadata (section 2);
- it calls ``Writer.Hello``, then opens the ``Writer.Connect`` stream, sends ``Register`` with its
  WMD as JSON (one FILEGROUP component "data" with files under /srv/python-writer) and reads
  ``Registered`` (section 5.1);
- it answers every event with one ``EventResult`` carrying the event's id: ``Identify`` with its
  WMD, ``PrepareForBackup`` and ``PostSnapshot`` with their ``components_json`` echoed unchanged,
  every other event with plain success (section 5.4). ``--veto-at EVENT`` makes it fail that
  event with VSS_E_WRITERERROR_RETRYABLE instead, which is a veto at Freeze or Thaw.

It holds no real data, so Freeze and Thaw have nothing to quiesce. It appends one line per event
to ``--events-log``: ``<monotonic seconds> <EventName> <set_id>``, with ``-`` for no set id.
It exits 0 when the stream ends (shadowcopyd closed it or went away, or the writer got SIGTERM or
SIGINT and closed its side), and 1 when a call is refused.

    generate.sh /tmp/stubs
    writer.py --stubs /tmp/stubs --socket /run/shadowcopy/shadowcopyd.sock --events-log events.txt
"""

import argparse
import json
import queue
import signal
import sys
import time

import grpc

PROTOCOL_MAJOR, PROTOCOL_MINOR = 1, 0
# Sent with every call, Hello and the opening of the stream included.
METADATA = (("x-shadowcopy-protocol", f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"),)
# WMDs and BCDs travel inside messages; the protocol allows up to 16 MiB (MAX_MESSAGE_SIZE).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024

CLASS_ID = "7f3b2c1e-5a4d-4e8f-9b6a-0c1d2e3f4a5b"  # this writer's class, fixed forever
NIL_GUID = "00000000-0000-0000-0000-000000000000"  # shadowcopyd assigns the instance id
DATA_DIR = "/srv/python-writer"

# Writer error codes of ERR-2, as the in-band Status carries them.
VSS_E_WRITERERROR_RETRYABLE = 0x800423F3
VSS_E_WRITERERROR_NONRETRYABLE = 0x800423F4

# The CoordinatorEvent oneof field of each event, and its name in the events log and --veto-at.
EVENT_NAMES = {
    "identify": "Identify",
    "prepare_for_backup": "PrepareForBackup",
    "prepare_for_snapshot": "PrepareForSnapshot",
    "freeze": "Freeze",
    "thaw": "Thaw",
    "post_snapshot": "PostSnapshot",
    "abort": "Abort",
    "backup_complete": "BackupComplete",
    "backup_shutdown": "BackupShutdown",
    "pre_restore": "PreRestore",
    "post_restore": "PostRestore",
}


def writer_metadata(name, instance_id):
    """The WMD as JSON text (docs/schema/writer-metadata.schema.json)."""
    return json.dumps({
        "schema_version": 1,
        "identity": {
            "writer_name": name,
            "class_id": CLASS_ID,
            "instance_id": instance_id,
            "usage_type": "USERDATA",
            "source_type": "OTHER",
        },
        "restore_method": {"method": "RESTORE_IF_CAN_REPLACE"},
        "components": [{
            "component_type": "FILEGROUP",
            "name": "data",
            "caption": "The Python writer's data files",
            "selectable_for_backup": True,
            "files": [{"path": DATA_DIR, "filespec": "*", "recursive": True}],
        }],
    })


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="shadowcopyd's Unix socket")
    parser.add_argument("--events-log", required=True, help="file to append one line per event to")
    parser.add_argument("--veto-at", choices=sorted(EVENT_NAMES.values()),
                        help="fail this event with VSS_E_WRITERERROR_RETRYABLE")
    parser.add_argument("--name", default="Python example writer", help="the writer's name")
    parser.add_argument("--stubs", help="the directory generate.sh wrote the stubs to")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.stubs:
        sys.path.insert(0, args.stubs)
    from shadowcopy.v1 import common_pb2, writer_pb2, writer_pb2_grpc

    channel = grpc.insecure_channel("unix:" + args.socket, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
        # grpcio (since 1.57) sends the %-encoded socket path as the HTTP/2 :authority, which
        # shadowcopyd's HTTP/2 layer (h2) refuses as malformed with RST_STREAM PROTOCOL_ERROR.
        # Any valid host name will do; localhost is the convention for Unix sockets.
        ("grpc.default_authority", "localhost"),
    ])
    stub = writer_pb2_grpc.WriterStub(channel)

    try:
        hello = stub.Hello(
            common_pb2.HelloRequest(protocol_major=PROTOCOL_MAJOR, protocol_minor=PROTOCOL_MINOR,
                                    client_name="python-writer 0.1.0"),
            metadata=METADATA,
        )
    except grpc.RpcError as error:
        print(f"python-writer: Hello to {args.socket} failed: {error.code().name}: "
              f"{error.details()}; is shadowcopyd running there?", file=sys.stderr)
        return 1
    print(f"python-writer: connected to {hello.server_version}, protocol "
          f"{hello.protocol_major}.{hello.protocol_minor}", flush=True)
    if hello.protocol_major != PROTOCOL_MAJOR:
        sys.exit(f"python-writer: shadowcopyd speaks protocol {hello.protocol_major}.x, not "
                 f"{PROTOCOL_MAJOR}.x; use a writer built for it")

    # The messages we send: Register first, then one EventResult per event. None closes our side.
    outgoing = queue.Queue()

    def requests():
        while (message := outgoing.get()) is not None:
            yield message

    outgoing.put(writer_pb2.WriterMessage(register=writer_pb2.Register(
        wmd_json=writer_metadata(args.name, NIL_GUID))))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: outgoing.put(None))

    instance_id = NIL_GUID
    try:
        for event in stub.Connect(requests(), metadata=METADATA):
            kind = event.WhichOneof("event")
            if kind == "registered":
                instance_id = event.registered.writer_instance_id
                print(f"python-writer: registered as instance {instance_id}", flush=True)
                continue
            body = getattr(event, kind) if kind else None
            name = EVENT_NAMES.get(kind, kind or "Unknown")
            set_id = getattr(body, "set_id", "") or "-"
            with open(args.events_log, "a") as log:
                log.write(f"{time.monotonic():.6f} {name} {set_id}\n")

            result = writer_pb2.EventResult(event_id=event.event_id, success=True)
            try:
                if name == args.veto_at:
                    result.success = False
                    result.failure.CopyFrom(common_pb2.Status(
                        code=VSS_E_WRITERERROR_RETRYABLE, name="VSS_E_WRITERERROR_RETRYABLE",
                        message=f"python-writer vetoed {name} as asked (--veto-at {name})",
                        hint="Run the writer without --veto-at and retry the backup."))
                elif kind == "identify":
                    result.wmd_json = writer_metadata(args.name, instance_id)
                elif kind in ("prepare_for_backup", "post_snapshot") and body.components_json:
                    # A real writer would set stamps or backup metadata here; we change nothing.
                    result.components_json = body.components_json
            except Exception as error:  # a failing handler is a failure, never a crash (SEC-5)
                result = writer_pb2.EventResult(event_id=event.event_id, success=False)
                result.failure.CopyFrom(common_pb2.Status(
                    code=VSS_E_WRITERERROR_NONRETRYABLE, name="VSS_E_WRITERERROR_NONRETRYABLE",
                    message=f"python-writer failed in {name}: {error!r}"))
            outgoing.put(writer_pb2.WriterMessage(event_result=result))
    except grpc.RpcError as error:
        if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            print(f"python-writer: shadowcopyd refused: {error.code().name}: {error.details()}",
                  file=sys.stderr)
            return 1
        print(f"python-writer: shadowcopyd went away: {error.details()}", flush=True)
    finally:
        outgoing.put(None)
        channel.close()
    print("python-writer: the stream ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
