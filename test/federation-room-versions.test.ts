import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import type { TestServer } from './helpers/server.ts';
import { until } from './helpers/wait.ts';

/**
 * Rooms of room versions 1 and 2 across two servers: their event IDs are chosen by the sending
 * server ($opaque:server) and their references carry reference hashes, so joining (make_join
 * templates with [id, hashes] pairs), sending both ways, inviting and redacting exercise the
 * legacy event format end to end, as rooms of those versions still exist on the network.
 */
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: response bodies are read loosely
type Json = Record<string, any>;
t.setTimeout(600_000);

for (const backend of databaseBackends()) {
  t.test(`room versions 1 and 2 over federation on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const messages = async (s: TestServer, token: string, roomId: string) =>
      (
        (await s.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token })).json()
          .chunk as Json[]
      ).filter((e) => e.type === 'm.room.message');

    for (const version of ['1', '2']) {
      t.test(`version ${version}: join, messages both ways, invite, redaction`, async (t) => {
        const created = await hs1.request('POST', `${V3}/createRoom`, {
          token: alice.access_token,
          body: { room_version: version, preset: 'public_chat', name: `Legacy v${version}` },
        });
        t.equal(created.statusCode, 200, created.body);
        const roomId: string = created.json().room_id;
        const joined = await hs2.request('POST', `${V3}/join/${enc(roomId)}?server_name=hs1.test`, {
          token: bob.access_token,
          body: {},
        });
        t.equal(joined.statusCode, 200, joined.body);
        // The template hs1 handed out references events as [id, {sha256}] pairs.
        const made = network.sent.find(
          (r) => r.from === 'hs2.test' && r.uri.startsWith(`/_matrix/federation/v1/make_join/${enc(roomId)}`),
        );
        t.ok(made, 'joined through make_join');
        const sendJoin = network.sent.find(
          (r) =>
            r.from === 'hs2.test' && r.uri.startsWith(`/_matrix/federation/v2/send_join/${enc(roomId)}/`),
        );
        const joinPdu = JSON.parse(Buffer.from(sendJoin!.body!).toString()) as Json;
        t.match(joinPdu.event_id, /^\$[A-Za-z0-9_-]+:hs2\.test$/, "the join's ID is chosen by hs2");
        t.ok(
          joinPdu.prev_events.every(
            (r: unknown) => Array.isArray(r) && typeof r[0] === 'string' && typeof r[1].sha256 === 'string',
          ),
          'its prev_events are [id, hashes] pairs',
        );

        const fromAlice = await hs1.request(
          'PUT',
          `${V3}/rooms/${enc(roomId)}/send/m.room.message/a${version}`,
          {
            token: alice.access_token,
            body: { msgtype: 'm.text', body: `from alice v${version}` },
          },
        );
        t.equal(fromAlice.statusCode, 200, fromAlice.body);
        t.match(fromAlice.json().event_id, /:hs1\.test$/);
        const bodies = async (s: TestServer, token: string) =>
          (await messages(s, token, roomId)).map((e) => e.content.body).reverse();
        // Bob answers once he has seen alice's message, so his reply follows it on both servers.
        await until("alice's message on hs2", async () => (await bodies(hs2, bob.access_token)).length === 1);
        const fromBob = await hs2.request(
          'PUT',
          `${V3}/rooms/${enc(roomId)}/send/m.room.message/b${version}`,
          {
            token: bob.access_token,
            body: { msgtype: 'm.text', body: `from bob v${version}` },
          },
        );
        t.equal(fromBob.statusCode, 200, fromBob.body);
        await until('both messages on hs1', async () => (await bodies(hs1, alice.access_token)).length === 2);
        await until('both messages on hs2', async () => (await bodies(hs2, bob.access_token)).length === 2);
        t.same(await bodies(hs1, alice.access_token), [`from alice v${version}`, `from bob v${version}`]);
        t.same(await bodies(hs2, bob.access_token), [`from alice v${version}`, `from bob v${version}`]);

        // Alice redacts bob's message (the v1/v2 redaction rule: her redact level).
        const redacted = await hs1.request(
          'PUT',
          `${V3}/rooms/${enc(roomId)}/redact/${enc(fromBob.json().event_id)}/r${version}`,
          { token: alice.access_token, body: {} },
        );
        t.equal(redacted.statusCode, 200, redacted.body);
        await until('the redaction on hs2', async () => {
          const ev = await hs2.request(
            'GET',
            `${V3}/rooms/${enc(roomId)}/event/${enc(fromBob.json().event_id)}`,
            {
              token: bob.access_token,
            },
          );
          return ev.statusCode === 200 && Object.keys(ev.json().content).length === 0;
        });

        // Bob has power 0, below the redact level: rule 11 of versions 1 and 2 lets him redact an
        // event whose ID is of his server (his redaction's ID is too), and no other.
        const own = await hs2.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/c${version}`, {
          token: bob.access_token,
          body: { msgtype: 'm.text', body: `bob takes this back v${version}` },
        });
        t.equal(own.statusCode, 200, own.body);
        const ownId: string = own.json().event_id;
        await until("bob's second message on hs1", async () => {
          const ev = await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(ownId)}`, {
            token: alice.access_token,
          });
          return ev.statusCode === 200;
        });
        const ownRedaction = await hs2.request(
          'PUT',
          `${V3}/rooms/${enc(roomId)}/redact/${enc(ownId)}/rb${version}`,
          { token: bob.access_token, body: {} },
        );
        t.equal(ownRedaction.statusCode, 200, ownRedaction.body);
        t.match(ownRedaction.json().event_id, /:hs2\.test$/);
        await until("bob's redaction applied on hs1", async () => {
          const ev = await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(ownId)}`, {
            token: alice.access_token,
          });
          return ev.statusCode === 200 && Object.keys(ev.json().content).length === 0;
        });
        const others = await hs2.request(
          'PUT',
          `${V3}/rooms/${enc(roomId)}/redact/${enc(fromAlice.json().event_id)}/rc${version}`,
          { token: bob.access_token, body: {} },
        );
        t.equal(others.statusCode, 403, `bob may not redact alice's event: ${others.body}`);
        t.equal(others.json().errcode, 'M_FORBIDDEN');

        // A private room of the version: hs1 invites bob, who accepts.
        const priv = await hs1.request('POST', `${V3}/createRoom`, {
          token: alice.access_token,
          body: { room_version: version, preset: 'private_chat', invite: [bob.user_id] },
        });
        t.equal(priv.statusCode, 200, priv.body);
        const privId: string = priv.json().room_id;
        // The invite went through /v2/invite under hs1's ID for it, carried in the event, whose
        // references are [id, hashes] pairs.
        const invited = network.sent.find(
          (r) => r.from === 'hs1.test' && r.uri.startsWith(`/_matrix/federation/v2/invite/${enc(privId)}/`),
        );
        t.ok(invited, 'invited through /v2/invite');
        const inviteBody = JSON.parse(Buffer.from(invited!.body!).toString()) as Json;
        t.match(
          inviteBody.event.event_id,
          /^\$[A-Za-z0-9_-]+:hs1\.test$/,
          "the invite's ID is chosen by hs1",
        );
        t.equal(invited!.uri.split('/').at(-1), enc(inviteBody.event.event_id), 'the path names that ID');
        t.equal(inviteBody.room_version, version);
        const strippedCreate = (inviteBody.invite_room_state as Json[]).find(
          (e) => e.type === 'm.room.create',
        );
        t.match(
          strippedCreate?.event_id,
          /^\$[A-Za-z0-9_-]+:hs1\.test$/,
          'the stripped create event goes whole as a v1/v2 PDU, with its event ID',
        );
        t.ok(
          inviteBody.event.auth_events.every(
            (r: unknown) => Array.isArray(r) && typeof r[1].sha256 === 'string',
          ),
          'its auth_events are [id, hashes] pairs',
        );
        await until('the invite reaches bob', async () => {
          const r = await hs2.request('GET', `${V3}/sync?timeout=0`, { token: bob.access_token });
          return r.json().rooms?.invite?.[privId] !== undefined;
        });
        const accept = await hs2.request('POST', `${V3}/join/${enc(privId)}`, {
          token: bob.access_token,
          body: {},
        });
        t.equal(accept.statusCode, 200, accept.body);
        await until('bob joined on hs1', async () => {
          const m = await hs1.request('GET', `${V3}/rooms/${enc(privId)}/joined_members`, {
            token: alice.access_token,
          });
          return m.json().joined?.[bob.user_id] !== undefined;
        });

        // A partition: both sides set the topic; once healed, both resolve the fork (state
        // resolution v1 in version 1, v2 in version 2) to the same topic.
        const topicOn = async (s: TestServer, token: string) =>
          (await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, { token })).json().topic;
        const levels = (
          await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`, {
            token: alice.access_token,
          })
        ).json();
        const raised = await hs1.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`, {
          token: alice.access_token,
          body: { ...levels, users: { ...levels.users, [bob.user_id]: 50 } },
        });
        t.equal(raised.statusCode, 200, raised.body);
        await until('bob may set the topic', async () => {
          const r = await hs2.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`, {
            token: bob.access_token,
          });
          return r.json().users?.[bob.user_id] === 50;
        });
        network.cut('hs1.test', 'hs2.test');
        for (const [s, token, topic] of [
          [hs1, alice.access_token, `hs1's topic v${version}`],
          [hs2, bob.access_token, `hs2's topic v${version}`],
        ] as const) {
          const r = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, {
            token,
            body: { topic },
          });
          t.equal(r.statusCode, 200, r.body);
        }
        network.heal('hs1.test', 'hs2.test');
        // Messages on both sides carry each side's events across and merge the branches.
        for (const [s, token, txn] of [
          [hs1, alice.access_token, `after1-${version}`],
          [hs2, bob.access_token, `after2-${version}`],
        ] as const) {
          const r = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/${txn}`, {
            token,
            body: { msgtype: 'm.text', body: txn },
          });
          t.equal(r.statusCode, 200, r.body);
        }
        await until('both servers hold both sides', async () => {
          for (const [s, token] of [
            [hs1, alice.access_token],
            [hs2, bob.access_token],
          ] as const) {
            const got = (await messages(s, token, roomId)).map((e) => e.content.body);
            if (!got.includes(`after1-${version}`) || !got.includes(`after2-${version}`)) return false;
          }
          return true;
        });
        await until(
          'one topic on both',
          async () => (await topicOn(hs1, alice.access_token)) === (await topicOn(hs2, bob.access_token)),
        );
        t.match(await topicOn(hs1, alice.access_token), /^hs[12]'s topic v/, 'one of the two topics');
      });
    }

    for (const version of ['1', '2']) {
      t.test(
        `version ${version}: history from before a join is backfilled; an invite is rejected`,
        async (t) => {
          const created = await hs1.request('POST', `${V3}/createRoom`, {
            token: alice.access_token,
            body: { room_version: version, preset: 'public_chat' },
          });
          t.equal(created.statusCode, 200, created.body);
          const roomId: string = created.json().room_id;
          const said: string[] = [];
          for (let i = 0; i < 25; i++) {
            said.push(`before the join ${i}`);
            const r = await hs1.request(
              'PUT',
              `${V3}/rooms/${enc(roomId)}/send/m.room.message/h${version}-${i}`,
              {
                token: alice.access_token,
                body: { msgtype: 'm.text', body: said.at(-1) },
              },
            );
            t.equal(r.statusCode, 200, r.body);
          }
          const joined = await hs2.request('POST', `${V3}/join/${enc(roomId)}?server_name=hs1.test`, {
            token: bob.access_token,
            body: {},
          });
          t.equal(joined.statusCode, 200, joined.body);
          // Bob pages back from the end; hs2 holds none of it and asks hs1 (/backfill), whose
          // answer is PDUs of the version, with [id, hashes] references.
          const seen: string[] = [];
          let from: string | undefined;
          for (let page = 0; page < 50; page++) {
            const r = await hs2.request(
              'GET',
              `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=10${from ? `&from=${enc(from)}` : ''}`,
              { token: bob.access_token },
            );
            t.equal(r.statusCode, 200, r.body);
            const chunk = r.json().chunk as Json[];
            seen.push(
              ...chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body as string),
            );
            if (r.json().end === undefined) break;
            from = r.json().end;
          }
          t.same(seen.reverse(), said, 'bob reads the whole history');
          t.ok(
            network.sent.some(
              (r) =>
                r.from === 'hs2.test' && r.uri.startsWith(`/_matrix/federation/v1/backfill/${enc(roomId)}`),
            ),
            'through /backfill',
          );

          // Bob rejects an invite to a private room of the version: make_leave's template has
          // [id, hashes] references, and send_leave carries his leave under an ID of hs2's.
          const priv = await hs1.request('POST', `${V3}/createRoom`, {
            token: alice.access_token,
            body: { room_version: version, preset: 'private_chat', invite: [bob.user_id] },
          });
          t.equal(priv.statusCode, 200, priv.body);
          const privId: string = priv.json().room_id;
          await until('the invite reaches bob', async () => {
            const r = await hs2.request('GET', `${V3}/sync?timeout=0`, { token: bob.access_token });
            return r.json().rooms?.invite?.[privId] !== undefined;
          });
          const reject = await hs2.request('POST', `${V3}/rooms/${enc(privId)}/leave`, {
            token: bob.access_token,
            body: {},
          });
          t.equal(reject.statusCode, 200, reject.body);
          const sendLeave = network.sent.find(
            (r) =>
              r.from === 'hs2.test' && r.uri.startsWith(`/_matrix/federation/v2/send_leave/${enc(privId)}/`),
          );
          t.ok(sendLeave, 'rejected through send_leave');
          t.match(JSON.parse(Buffer.from(sendLeave!.body!).toString()).event_id, /:hs2\.test$/);
          await until('hs1 sees bob leave', async () => {
            const r = await hs1.request(
              'GET',
              `${V3}/rooms/${enc(privId)}/state/m.room.member/${enc(bob.user_id)}`,
              { token: alice.access_token },
            );
            return r.statusCode === 200 && r.json().membership === 'leave';
          });
        },
      );
    }

    t.test('a legacy event whose ID names a server that did not sign it is dropped', async (t) => {
      const created = await hs1.request('POST', `${V3}/createRoom`, {
        token: alice.access_token,
        body: { room_version: '1', preset: 'public_chat' },
      });
      const roomId: string = created.json().room_id;
      t.equal(
        (
          await hs2.request('POST', `${V3}/join/${enc(roomId)}?server_name=hs1.test`, {
            token: bob.access_token,
            body: {},
          })
        ).statusCode,
        200,
      );
      const rv = (await import('../src/protocol/room-versions.ts')).getRoomVersion('1')!;
      const { hashAndSignEvent } = await import('../src/protocol/event-signing.ts');
      const { toWirePdu } = await import('../src/protocol/event.ts');
      const { legacyReferenceHashes } = await import('../src/events/build.ts');
      const db = hs2.runtime.services.db;
      const key = hs2.runtime.services.serverKeys.key;
      // hs2 builds a message of bob's on the room as it holds it, under the event ID given, signed
      // by hs2 alone, and pushes it to hs1 in a transaction.
      const push = async (eventId: string, body: string, txnId: string) => {
        const ext = await db
          .selectFrom('room_forward_extremities')
          .select('event_id')
          .where('room_id', '=', roomId)
          .execute();
        const prev = ext.map((r) => r.event_id);
        const state = await db
          .selectFrom('current_state')
          .select(['type', 'state_key', 'event_id'])
          .where('room_id', '=', roomId)
          .execute();
        const auth = state
          .filter(
            (r) =>
              r.type === 'm.room.create' ||
              r.type === 'm.room.power_levels' ||
              (r.type === 'm.room.member' && r.state_key === bob.user_id),
          )
          .map((r) => r.event_id);
        const hashes = await legacyReferenceHashes(db, hs2.runtime.services.reader, rv, [...prev, ...auth]);
        const pdu = hashAndSignEvent(
          {
            event_id: eventId,
            type: 'm.room.message',
            room_id: roomId,
            sender: bob.user_id,
            content: { msgtype: 'm.text', body },
            origin_server_ts: Date.now(),
            depth: 100,
            prev_events: prev,
            auth_events: auth,
            reference_hashes: hashes,
          },
          rv,
          'hs2.test',
          key.keyId,
          key.seed,
        );
        const res = await hs2.runtime.services.federation.client.request<Json>({
          destination: 'hs1.test',
          method: 'PUT',
          path: `/_matrix/federation/v1/send/${txnId}`,
          body: { origin: 'hs2.test', origin_server_ts: Date.now(), pdus: [toWirePdu(pdu, rv)] },
        });
        const seen = await hs1.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(eventId)}`, {
          token: alice.access_token,
        });
        return { result: res.pdus?.[eventId] as Json | undefined, seen: seen.statusCode };
      };

      // The control: the same event under an ID of hs2's own is taken.
      const genuine = await push('$genuine-by-hs2:hs2.test', 'genuine id', 'legacy-genuine-1');
      t.same(genuine.result, {}, 'an event under an ID of its signer is accepted');
      t.equal(genuine.seen, 200, 'alice sees it');

      // hs2 claims an ID of hs1's: hs1's signature is required, and there is none.
      const forged = await push('$forged-by-hs2:hs1.test', 'forged id', 'legacy-forged-1');
      t.match(forged.result?.error, /signature.*hs1\.test/, `refused: ${JSON.stringify(forged.result)}`);
      t.equal(forged.seen, 404, 'no client sees it');

      // An ID without a server name names no origin: refused as malformed.
      const nameless = await push('$nameless-by-hs2', 'nameless id', 'legacy-nameless-1');
      t.match(nameless.result?.error, /event_id/, `refused: ${JSON.stringify(nameless.result)}`);
      t.equal(nameless.seen, 404, 'no client sees it either');
    });
  });
}
