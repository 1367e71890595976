import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';

/** Rooms of every version (1 to 12) work end to end through the client API; unknown versions are refused. */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`room versions through the API on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    for (const version of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12']) {
      const created = await s.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { room_version: version, preset: 'public_chat', name: `v${version}` },
      });
      t.equal(created.statusCode, 200, `v${version} room created: ${created.body}`);
      const roomId: string = created.json().room_id;
      const joined = await s.request('POST', `${V3}/join/${enc(roomId)}`, {
        token: bob.access_token,
        body: {},
      });
      t.equal(joined.statusCode, 200, `bob joins the v${version} room`);
      const sent = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/v${version}`, {
        token: bob.access_token,
        body: { msgtype: 'm.text', body: `hello v${version}` },
      });
      t.equal(sent.statusCode, 200, `a message in the v${version} room`);
      const eventId: string = sent.json().event_id;
      // v1 and v2 event IDs are chosen by the server ($opaque:server), v3 ones are standard
      // base64, v4 and later URL-safe.
      t.match(
        eventId,
        version === '1' || version === '2'
          ? /^\$[A-Za-z0-9_-]{24}:conclave\.test$/
          : version === '3'
            ? /^\$[A-Za-z0-9+/]{43}$/
            : /^\$[A-Za-z0-9_-]{43}$/,
        `v${version} event ID`,
      );
      const redacted = await s.request(
        'PUT',
        `${V3}/rooms/${enc(roomId)}/redact/${enc(eventId)}/r${version}`,
        {
          token: alice.access_token,
          body: {},
        },
      );
      t.equal(redacted.statusCode, 200, `alice redacts it in v${version}`);
      const read = await s.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(eventId)}`, {
        token: bob.access_token,
      });
      t.same(read.json().content, {}, `v${version}: the redacted message has no content`);
      const create = await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.create`, {
        token: bob.access_token,
      });
      t.equal(create.json().room_version, version);
    }
    for (const version of ['0', '13', '1.5', 'org.example.custom']) {
      const refused = await s.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { room_version: version },
      });
      t.equal(refused.statusCode, 400, `v${version} is refused`);
      t.equal(refused.json().errcode, 'M_UNSUPPORTED_ROOM_VERSION');
    }
    const caps = await s.request('GET', `${V3}/capabilities`, { token: alice.access_token });
    t.same(
      Object.keys(caps.json().capabilities['m.room_versions'].available).sort(
        (a, b) => Number(a) - Number(b),
      ),
      ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12'],
      'capabilities list versions 1 to 12',
    );

    // Upgrades out of and into the legacy versions: a v1 room to 12, a 12 room to 2.
    for (const [from, to] of [
      ['1', '12'],
      ['12', '2'],
    ] as const) {
      const old = await s.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { room_version: from, preset: 'public_chat', name: `from v${from}` },
      });
      const oldId: string = old.json().room_id;
      const up = await s.request('POST', `${V3}/rooms/${enc(oldId)}/upgrade`, {
        token: alice.access_token,
        body: { new_version: to },
      });
      t.equal(up.statusCode, 200, `v${from} upgrades to v${to}: ${up.body}`);
      const newId: string = up.json().replacement_room;
      const create = await s.request('GET', `${V3}/rooms/${enc(newId)}/state/m.room.create`, {
        token: alice.access_token,
      });
      t.equal(create.json().room_version, to);
      t.same(create.json().predecessor?.room_id, oldId);
      const name = await s.request('GET', `${V3}/rooms/${enc(newId)}/state/m.room.name`, {
        token: alice.access_token,
      });
      t.equal(name.json().name, `from v${from}`, 'the state is carried over');
      const said = await s.request('PUT', `${V3}/rooms/${enc(newId)}/send/m.room.message/up${to}`, {
        token: alice.access_token,
        body: { msgtype: 'm.text', body: 'in the new room' },
      });
      t.equal(said.statusCode, 200, said.body);
      t.match(
        said.json().event_id,
        to === '2' ? /^\$[A-Za-z0-9_-]{24}:conclave\.test$/ : /^\$[A-Za-z0-9_-]{43}$/,
      );
    }
  });
}
