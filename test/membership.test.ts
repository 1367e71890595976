import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { SERVER_NAME, startTestServer, syncOnce } from './helpers/server.ts';

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`membership and room versions on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const carol = await s.register('carol');
    const call = (method: 'GET' | 'POST' | 'PUT', url: string, token: string, body?: unknown) =>
      s.request(method, url, { token, ...(body !== undefined ? { body } : {}) });

    t.test('room versions 10, 11 and 12', async (t) => {
      for (const version of ['10', '11', '12']) {
        const r = await call('POST', `${V3}/createRoom`, alice.access_token, {
          room_version: version,
          preset: 'public_chat',
        });
        t.equal(r.statusCode, 200, `v${version} room created`);
        const roomId: string = r.json().room_id;
        if (version === '12')
          t.match(roomId, /^![A-Za-z0-9_-]{43}$/, 'v12: the room ID is the create event hash');
        else
          t.match(
            roomId,
            new RegExp(`^![^:]+:${SERVER_NAME.replace('.', '\\.')}$`),
            `v${version}: !opaque:server`,
          );
        const create = await call(
          'GET',
          `${V3}/rooms/${enc(roomId)}/state/m.room.create`,
          alice.access_token,
        );
        t.equal(create.json().room_version, version);
        const join = await call('POST', `${V3}/join/${enc(roomId)}`, bob.access_token, {});
        t.equal(join.statusCode, 200, `bob joins the v${version} room`);
        const sent = await call(
          'PUT',
          `${V3}/rooms/${enc(roomId)}/send/m.room.message/v${version}`,
          bob.access_token,
          {
            msgtype: 'm.text',
            body: `hello v${version}`,
          },
        );
        t.equal(sent.statusCode, 200);
      }
    });

    t.test('knock: accepted by a member with invite power, refused by a kick', async (t) => {
      const r = await call('POST', `${V3}/createRoom`, alice.access_token, {
        preset: 'private_chat',
        initial_state: [{ type: 'm.room.join_rules', content: { join_rule: 'knock' } }],
      });
      const roomId: string = r.json().room_id;
      const direct = await call('POST', `${V3}/join/${enc(roomId)}`, bob.access_token, {});
      t.equal(direct.statusCode, 403, 'a knock room cannot be joined without an invite');
      const knock = await call('POST', `${V3}/knock/${enc(roomId)}`, bob.access_token, {
        reason: 'let me in',
      });
      t.equal(knock.statusCode, 200);
      const members = await call(
        'GET',
        `${V3}/rooms/${enc(roomId)}/members?membership=knock`,
        alice.access_token,
      );
      t.same(
        members.json().chunk.map((e: { state_key: string }) => e.state_key),
        [bob.user_id],
        'alice sees the knock',
      );
      const accept = await call('POST', `${V3}/rooms/${enc(roomId)}/invite`, alice.access_token, {
        user_id: bob.user_id,
      });
      t.equal(accept.statusCode, 200, 'accepting is an invite');
      t.equal((await call('POST', `${V3}/join/${enc(roomId)}`, bob.access_token, {})).statusCode, 200);

      const knock2 = await call('POST', `${V3}/knock/${enc(roomId)}`, carol.access_token, {});
      t.equal(knock2.statusCode, 200);
      const refuseByBob = await call('POST', `${V3}/rooms/${enc(roomId)}/kick`, bob.access_token, {
        user_id: carol.user_id,
      });
      t.equal(refuseByBob.statusCode, 403, 'bob lacks the kick level');
      const refuse = await call('POST', `${V3}/rooms/${enc(roomId)}/kick`, alice.access_token, {
        user_id: carol.user_id,
      });
      t.equal(refuse.statusCode, 200, 'refusing is a kick of the knock');
      const after = await call(
        'GET',
        `${V3}/rooms/${enc(roomId)}/members?not_membership=leave`,
        alice.access_token,
      );
      t.notOk(after.body.includes(carol.user_id), 'carol is no longer knocking');
      const publicKnock = await call('POST', `${V3}/createRoom`, alice.access_token, {
        preset: 'public_chat',
      });
      const refused = await call(
        'POST',
        `${V3}/knock/${enc(publicKnock.json().room_id)}`,
        carol.access_token,
        {},
      );
      t.equal(refused.statusCode, 403, 'a public room does not take knocks');
    });

    t.test(
      'a rescinded knock, a refused knock and a rejected invite reach the user as a leave',
      async (t) => {
        const r = await call('POST', `${V3}/createRoom`, alice.access_token, {
          preset: 'private_chat',
          initial_state: [{ type: 'm.room.join_rules', content: { join_rule: 'knock' } }],
        });
        const roomId: string = r.json().room_id;
        // The user's own leave in rooms.leave, whatever came before it; nothing else of the room.
        const ownLeave = async (who: typeof bob, since: string, sender: string) => {
          const left = (await syncOnce(s, who, { since, timeout: 0 })).rooms.leave[roomId];
          const events = (left?.timeline.events ?? []) as Array<Record<string, unknown>>;
          t.same(
            events.map((e) => [
              e.type,
              e.state_key,
              e.sender,
              (e.content as { membership: string }).membership,
            ]),
            [['m.room.member', who.user_id, sender, 'leave']],
            `${who.user_id} sees the leave by ${sender}, and only it`,
          );
        };
        t.equal((await call('POST', `${V3}/knock/${enc(roomId)}`, bob.access_token, {})).statusCode, 200);
        let since = (await syncOnce(s, bob, { timeout: 0 })).next_batch as string;
        t.equal(
          (await call('POST', `${V3}/rooms/${enc(roomId)}/leave`, bob.access_token, {})).statusCode,
          200,
        );
        await ownLeave(bob, since, bob.user_id);

        t.equal((await call('POST', `${V3}/knock/${enc(roomId)}`, bob.access_token, {})).statusCode, 200);
        since = (await syncOnce(s, bob, { timeout: 0 })).next_batch as string;
        const kick = await call('POST', `${V3}/rooms/${enc(roomId)}/kick`, alice.access_token, {
          user_id: bob.user_id,
        });
        t.equal(kick.statusCode, 200);
        await ownLeave(bob, since, alice.user_id);

        await call('POST', `${V3}/rooms/${enc(roomId)}/invite`, alice.access_token, {
          user_id: carol.user_id,
        });
        since = (await syncOnce(s, carol, { timeout: 0 })).next_batch as string;
        t.equal(
          (await call('POST', `${V3}/rooms/${enc(roomId)}/leave`, carol.access_token, {})).statusCode,
          200,
        );
        await ownLeave(carol, since, carol.user_id);
      },
    );

    t.test(
      'a left room in an initial sync with include_leave: timeline and state up to the leave',
      async (t) => {
        const made = await call('POST', `${V3}/createRoom`, alice.access_token, { preset: 'public_chat' });
        const roomId: string = made.json().room_id;
        await call('POST', `${V3}/join/${enc(roomId)}`, bob.access_token, {});
        const state = (key: string) =>
          call('PUT', `${V3}/rooms/${enc(roomId)}/state/a.test.state/`, alice.access_token, { key });
        const say = (body: string) =>
          call(
            'PUT',
            `${V3}/rooms/${enc(roomId)}/send/m.room.message/${body}-${roomId.slice(1, 6)}`,
            alice.access_token,
            {
              msgtype: 'm.text',
              body,
            },
          );
        await say('before');
        await state('before');
        await call('POST', `${V3}/rooms/${enc(roomId)}/leave`, bob.access_token, {});
        await say('after');
        await state('after');
        const sync = async (filter: unknown) =>
          (await syncOnce(s, bob, { filter: JSON.stringify(filter), timeout: 0 })).rooms.leave[roomId];
        const kept = await sync({
          room: {
            include_leave: true,
            timeline: { types: ['m.room.message', 'a.test.state'] },
            state: { types: ['a.test.state'] },
          },
        });
        type Ev = { type: string; state_key?: string; content: Record<string, unknown> };
        t.same(
          kept.timeline.events.map((e: Ev) => [e.type, e.content.body ?? e.content.key]),
          [
            ['m.room.message', 'before'],
            ['a.test.state', 'before'],
          ],
          'the timeline stops at the leave and keeps to its filter',
        );
        t.same(kept.state.events, [], 'the state filter keeps nothing from before the timeline');
        const empty = await sync({ room: { include_leave: true, timeline: { limit: 0 } } });
        t.same(empty.timeline.events, [], 'a limit of 0: no timeline');
        const byKey = new Map(empty.state.events.map((e: Ev) => [`${e.type}|${e.state_key}`, e]));
        t.equal(
          (byKey.get(`m.room.member|${bob.user_id}`) as Ev | undefined)?.content.membership,
          'leave',
          'then the state is the state at the leave, the leave included',
        );
        t.equal(
          (byKey.get('a.test.state|') as Ev | undefined)?.content.key,
          'before',
          'nothing from after it',
        );
      },
    );

    t.test('a join body adds its fields to the member event', async (t) => {
      const r = await call('POST', `${V3}/createRoom`, alice.access_token, {
        preset: 'public_chat',
        room_alias_name: 'custom-join',
      });
      const roomId: string = r.json().room_id;
      const joined = await call(
        'POST',
        `${V3}/join/${enc(`#custom-join:${SERVER_NAME}`)}`,
        carol.access_token,
        {
          foo: 'bar',
          reason: 'curious',
          membership: 'ban',
        },
      );
      t.equal(joined.statusCode, 200);
      t.equal(joined.json().room_id, roomId);
      const member = await call(
        'GET',
        `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(carol.user_id)}`,
        alice.access_token,
      );
      t.equal(member.json().foo, 'bar', 'the custom field is kept');
      t.equal(member.json().reason, 'curious');
      t.equal(member.json().membership, 'join', 'the body cannot change the membership');
      await call('POST', `${V3}/rooms/${enc(roomId)}/leave`, carol.access_token, {});
      const malformed = await call('POST', `${V3}/rooms/${enc(roomId)}/join`, carol.access_token, {
        reason: 5,
      });
      t.equal(malformed.statusCode, 200, 'a reason that is not a string is left out');
      const again = await call(
        'GET',
        `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(carol.user_id)}`,
        alice.access_token,
      );
      t.notOk('reason' in again.json());
      await call('POST', `${V3}/rooms/${enc(roomId)}/leave`, carol.access_token, {});
    });

    t.test('an invite to a room its inviter has left can be rejected, and sync says so', async (t) => {
      const room = (
        await call('POST', `${V3}/createRoom`, alice.access_token, { preset: 'private_chat' })
      ).json().room_id as string;
      t.equal(
        (
          await call('POST', `${V3}/rooms/${enc(room)}/invite`, alice.access_token, {
            user_id: carol.user_id,
          })
        ).statusCode,
        200,
      );
      const since = (await call('GET', `${V3}/sync?timeout=0`, carol.access_token)).json();
      t.ok(since.rooms?.invite?.[room], 'carol is invited');
      t.equal((await call('POST', `${V3}/rooms/${enc(room)}/leave`, alice.access_token, {})).statusCode, 200);
      // Nobody is joined now, on this server or any other: the rejection is an event of the room.
      const reject = await call('POST', `${V3}/rooms/${enc(room)}/leave`, carol.access_token, {});
      t.equal(reject.statusCode, 200, reject.body);
      const after = (
        await call('GET', `${V3}/sync?timeout=0&since=${since.next_batch}`, carol.access_token)
      ).json();
      t.notOk(after.rooms?.invite?.[room], 'no longer invited');
      const left = after.rooms?.leave?.[room];
      t.ok(left, `the room is under leave: ${JSON.stringify(after.rooms ?? {}).slice(0, 300)}`);
      const own = (left?.timeline?.events ?? []).find(
        (e: { type: string; state_key?: string }) =>
          e.type === 'm.room.member' && e.state_key === carol.user_id,
      );
      t.equal(own?.content?.membership, 'leave', 'with her leave in the timeline');
      const state = await s.runtime.database.db
        .selectFrom('memberships')
        .select('membership')
        .where('room_id', '=', room)
        .where('user_id', '=', carol.user_id)
        .executeTakeFirst();
      t.equal(state?.membership, 'leave', "the room's membership of carol is leave");
    });

    t.test('ban, unban, leave and forget', async (t) => {
      const r = await call('POST', `${V3}/createRoom`, alice.access_token, { preset: 'public_chat' });
      const roomId: string = r.json().room_id;
      await call('POST', `${V3}/join/${enc(roomId)}`, carol.access_token, {});
      t.equal(
        (await call('POST', `${V3}/rooms/${enc(roomId)}/ban`, alice.access_token, { user_id: carol.user_id }))
          .statusCode,
        200,
      );
      t.equal(
        (await call('POST', `${V3}/join/${enc(roomId)}`, carol.access_token, {})).statusCode,
        403,
        'banned',
      );
      const unbanByCarol = await call('POST', `${V3}/rooms/${enc(roomId)}/unban`, carol.access_token, {
        user_id: carol.user_id,
      });
      t.equal(unbanByCarol.statusCode, 403);
      t.equal(
        (
          await call('POST', `${V3}/rooms/${enc(roomId)}/unban`, alice.access_token, {
            user_id: carol.user_id,
          })
        ).statusCode,
        200,
      );
      t.equal(
        (await call('POST', `${V3}/join/${enc(roomId)}`, carol.access_token, {})).statusCode,
        200,
        'unbanned, carol rejoins',
      );
      const forgetJoined = await call('POST', `${V3}/rooms/${enc(roomId)}/forget`, carol.access_token, {});
      t.equal(forgetJoined.statusCode, 400, 'a joined room cannot be forgotten');
      t.equal(forgetJoined.json().errcode, 'M_UNKNOWN', "the spec's errcode for it");
      const includeLeave = enc(JSON.stringify({ room: { include_leave: true } }));
      const beforeLeave = (await call('GET', `${V3}/sync?filter=${includeLeave}`, carol.access_token)).json();
      t.equal(
        (await call('POST', `${V3}/rooms/${enc(roomId)}/leave`, carol.access_token, {})).statusCode,
        200,
      );
      const historyAfterLeave = await call(
        'GET',
        `${V3}/rooms/${enc(roomId)}/messages?dir=b`,
        carol.access_token,
      );
      t.equal(historyAfterLeave.statusCode, 200, 'history up to the leave is readable');
      t.equal(
        (await call('POST', `${V3}/rooms/${enc(roomId)}/forget`, carol.access_token, {})).statusCode,
        200,
      );
      const historyAfterForget = await call(
        'GET',
        `${V3}/rooms/${enc(roomId)}/messages?dir=b`,
        carol.access_token,
      );
      t.equal(historyAfterForget.statusCode, 403, 'a forgotten room cannot be paginated');
      const stateAfterForget = await call('GET', `${V3}/rooms/${enc(roomId)}/state`, carol.access_token);
      t.equal(stateAfterForget.statusCode, 403, 'nor its state read');
      const incremental = await call(
        'GET',
        `${V3}/sync?filter=${includeLeave}&since=${beforeLeave.next_batch}`,
        carol.access_token,
      );
      t.ok(incremental.json().rooms.leave[roomId], 'the next incremental sync still tells of the leave');
      const sync = await call('GET', `${V3}/sync?filter=${includeLeave}`, carol.access_token);
      t.notOk(sync.json().rooms.leave[roomId], 'a forgotten room is not in the leave section');
      const leaveAgain = await call('POST', `${V3}/rooms/${enc(roomId)}/leave`, carol.access_token, {});
      t.equal(leaveAgain.statusCode, 403);
    });

    t.test('history visibility: joined and world_readable', async (t) => {
      const r = await call('POST', `${V3}/createRoom`, alice.access_token, {
        preset: 'public_chat',
        initial_state: [{ type: 'm.room.history_visibility', content: { history_visibility: 'joined' } }],
      });
      const roomId: string = r.json().room_id;
      await call('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/before`, alice.access_token, {
        msgtype: 'm.text',
        body: 'before bob joined',
      });
      await call('POST', `${V3}/join/${enc(roomId)}`, bob.access_token, {});
      const history = await call(
        'GET',
        `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`,
        bob.access_token,
      );
      t.notOk(history.body.includes('before bob joined'), '`joined`: nothing from before the join');

      const wr = await call('POST', `${V3}/createRoom`, alice.access_token, {
        preset: 'private_chat',
        initial_state: [
          { type: 'm.room.history_visibility', content: { history_visibility: 'world_readable' } },
        ],
      });
      const wrId: string = wr.json().room_id;
      await call('PUT', `${V3}/rooms/${enc(wrId)}/send/m.room.message/open`, alice.access_token, {
        msgtype: 'm.text',
        body: 'readable by all',
      });
      const outsider = await call(
        'GET',
        `${V3}/rooms/${enc(wrId)}/messages?dir=b&limit=50`,
        carol.access_token,
      );
      t.equal(outsider.statusCode, 200, '`world_readable`: an outsider may read');
      t.ok(outsider.body.includes('readable by all'));
      const send = await call('PUT', `${V3}/rooms/${enc(wrId)}/send/m.room.message/no`, carol.access_token, {
        msgtype: 'm.text',
        body: 'x',
      });
      t.equal(send.statusCode, 403, 'but not write');
    });
  });
}
