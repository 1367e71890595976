"""A matrix-nio end-to-end encryption client for Conclave's real-client tests.

Logs in as a user on a homeserver (loopback), joins an encrypted room it is invited to (or is
in), trusts every device it sees (a test setting: no interactive verification), sends one
encrypted message, and prints what happens as JSON lines on stdout:

  {"event": "logged_in", "device_id": ...}
  {"event": "ready"}                      joined, keys uploaded, members' devices known
  {"event": "sent", "event_id": ..., "session_id": ...}
  {"event": "message", "sender": ..., "event_id": ..., "body": ...}   one per decrypted message
  {"event": "undecryptable", "sender": ..., "event_id": ..., "session_id": ...}
  {"event": "done"} or {"event": "timeout"} or {"event": "error", "what": ...}

It exits 0 once it has sent its message and decrypted --expect messages from others, 1 on
timeout, 2 on error. The password comes from the NIO_PASSWORD environment variable so it is not
on a command line; no token or key is printed.

The test (test/e2ee-real-client.test.ts) runs this with the Python of a virtual environment
outside the repository, in the system's temporary directory (os.tmpdir()), in a folder named
after a hash of test/nio/requirements.txt. When that folder has no Python yet it creates it:

  python3 -m venv <tmpdir>/conclave-nio-<hash>
  <tmpdir>/conclave-nio-<hash>/bin/pip install -r test/nio/requirements.txt

On Debian that needs the python3 and python3-venv packages; matrix-nio 0.26's encryption uses
vodozemac wheels, so no libolm is needed.
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinError,
    KeysQueryError,
    KeysUploadError,
    LoginResponse,
    MegolmEvent,
    RoomMessageText,
    RoomSendResponse,
    SyncError,
)


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class Failed(Exception):
    pass


async def housekeeping(client: AsyncClient) -> None:
    """What nio's sync_forever does between syncs: keys to upload, query and claim, to-device."""
    if client.should_upload_keys:
        res = await client.keys_upload()
        if isinstance(res, KeysUploadError):
            raise Failed(f"keys/upload: {res.status_code} {res.message}")
    if client.should_query_keys:
        res = await client.keys_query()
        if isinstance(res, KeysQueryError):
            raise Failed(f"keys/query: {res.status_code} {res.message}")
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()


def trust_everyone(client: AsyncClient, room_id: str) -> None:
    """Test setting: marks every device of every member as verified."""
    room = client.rooms.get(room_id)
    if room is None:
        return
    for user_id in room.users:
        if user_id == client.user_id:
            continue
        for device in client.device_store.active_user_devices(user_id):
            if not device.verified:
                client.verify_device(device)


async def sync(client: AsyncClient, timeout_ms: int, full_state: bool = False) -> None:
    res = await client.sync(timeout=timeout_ms, full_state=full_state)
    if isinstance(res, SyncError):
        raise Failed(f"sync: {res.status_code} {res.message}")


async def run(args: argparse.Namespace, store_dir: str) -> int:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = AsyncClient(args.homeserver, args.user, store_path=store_dir, config=config)
    received: list[str] = []
    pending: list[MegolmEvent] = []

    def on_text(room, event: RoomMessageText) -> None:
        if room.room_id != args.room or event.sender == client.user_id:
            return
        if event.event_id in received:
            return
        received.append(event.event_id)
        emit("message", sender=event.sender, event_id=event.event_id, body=event.body)

    def on_undecryptable(room, event: MegolmEvent) -> None:
        if room.room_id != args.room or event.sender == client.user_id:
            return
        pending.append(event)
        emit("undecryptable", sender=event.sender, event_id=event.event_id, session_id=event.session_id)

    client.add_event_callback(on_text, RoomMessageText)
    client.add_event_callback(on_undecryptable, MegolmEvent)

    try:
        login = await client.login(os.environ.get("NIO_PASSWORD", ""), device_name="matrix-nio test")
        if not isinstance(login, LoginResponse):
            raise Failed(f"login: {getattr(login, 'status_code', '')} {getattr(login, 'message', '')}")
        emit("logged_in", device_id=login.device_id)
        await housekeeping(client)  # device and one-time keys, before anyone looks for them

        await sync(client, 0, full_state=True)
        while args.room not in client.rooms:
            if args.room in client.invited_rooms:
                res = await client.join(args.room)
                if isinstance(res, JoinError):
                    raise Failed(f"join: {res.status_code} {res.message}")
            await sync(client, 1000)
        room = client.rooms[args.room]
        if not room.encrypted:
            raise Failed("the room is not encrypted")
        await client.joined_members(args.room)
        await housekeeping(client)
        trust_everyone(client, args.room)
        emit("ready")

        sent = False
        while True:
            if not sent:
                trust_everyone(client, args.room)
                res = await client.room_send(
                    args.room, "m.room.message", {"msgtype": "m.text", "body": args.send}
                )
                if not isinstance(res, RoomSendResponse):
                    raise Failed(f"send: {getattr(res, 'status_code', '')} {getattr(res, 'message', '')}")
                outbound = client.olm.outbound_group_sessions.get(args.room) if client.olm else None
                emit("sent", event_id=res.event_id, session_id=outbound.id if outbound else None)
                sent = True
            # Messages whose key came after them: try again now.
            for event in list(pending):
                try:
                    decrypted = client.decrypt_event(event)
                except Exception:  # noqa: BLE001 - still no key
                    continue
                pending.remove(event)
                if isinstance(decrypted, RoomMessageText):
                    on_text(room, decrypted)
            if sent and len(received) >= args.expect:
                emit("done")
                return 0
            await sync(client, 1000)
            await housekeeping(client)
    finally:
        await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--homeserver", required=True, help="base URL, e.g. http://127.0.0.1:8008")
    parser.add_argument("--user", required=True, help="full user ID")
    parser.add_argument("--room", required=True, help="room ID to join (if invited) and use")
    parser.add_argument("--send", required=True, help="body of the one message to send")
    parser.add_argument("--expect", type=int, default=1, help="messages from others to wait for")
    parser.add_argument("--timeout", type=float, default=60, help="seconds before giving up")
    args = parser.parse_args()

    store_dir = tempfile.mkdtemp(prefix="conclave-nio-store-")
    try:
        return asyncio.run(asyncio.wait_for(run(args, store_dir), args.timeout))
    except (asyncio.TimeoutError, TimeoutError):
        emit("timeout")
        return 1
    except Failed as err:
        emit("error", what=str(err))
        return 2
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
