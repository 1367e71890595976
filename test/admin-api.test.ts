import t from 'tap';
import { runAdmin } from '../src/admin.ts';
import { databaseBackends } from './helpers/backends.ts';
import { PASSWORD, SERVER_NAME, startTestServer, syncOnce } from './helpers/server.ts';

/**
 * The admin API driven as synapse-admin drives it: the paths, query parameters and bodies its
 * data provider sends (react-admin's getList/getOne/update/create/delete over Synapse's API),
 * including its habits: whole records sent back on update, DELETE with a JSON content type and
 * no body, DELETE of a report with the report as the body.
 */
const V3 = '/_matrix/client/v3';
const A1 = '/_synapse/admin/v1';
const A2 = '/_synapse/admin/v2';
const enc = encodeURIComponent;
const json = { 'content-type': 'application/json' };

for (const backend of databaseBackends()) {
  t.test(`admin API on ${backend.name}`, async (t) => {
    t.setTimeout(240_000);
    const s = await startTestServer(t, backend);
    const root = await s.registerAdmin('root');
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const mallory = await s.register('mallory');
    const as = (who: { access_token: string }) => ({ token: who.access_token });

    t.test('server_version answers anyone (synapse-admin asks before logging in)', async (t) => {
      const res = await s.request('GET', `${A1}/server_version`);
      t.equal(res.statusCode, 200);
      t.match(res.json().server_version, /^Conclave /);
    });

    t.test('users: list with filters, paging and order as synapse-admin asks', async (t) => {
      const list = await s.request(
        'GET',
        `${A2}/users?deactivated=false&dir=f&from=0&guests=true&limit=10&locked=false&order_by=name`,
        as(root),
      );
      t.equal(list.statusCode, 200, list.body);
      const body = list.json();
      t.same(
        body.users.map((u: { name: string }) => u.name),
        ['alice', 'bob', 'mallory', 'root'].map((l) => `@${l}:${SERVER_NAME}`),
      );
      t.equal(body.total, 4);
      t.notOk('next_token' in body, 'no next_token on the last page');
      const u = body.users.find((x: { name: string }) => x.name === alice.user_id);
      t.match(u, {
        admin: false,
        deactivated: false,
        is_guest: false,
        locked: false,
        shadow_banned: false,
        displayname: 'alice',
      });
      t.type(u.creation_ts, 'number');
      t.ok(u.creation_ts < 1e11, 'creation_ts in seconds, as synapse-admin multiplies it by 1000');

      const page1 = (
        await s.request('GET', `${A2}/users?from=0&limit=2&order_by=name&dir=b`, as(root))
      ).json();
      t.same(
        page1.users.map((x: { name: string }) => x.name),
        [`@root:${SERVER_NAME}`, mallory.user_id],
      );
      t.equal(page1.next_token, '2');
      const page2 = (
        await s.request('GET', `${A2}/users?from=${page1.next_token}&limit=2&order_by=name&dir=b`, as(root))
      ).json();
      t.same(
        page2.users.map((x: { name: string }) => x.name),
        [bob.user_id, alice.user_id],
      );

      const named = (await s.request('GET', `${A2}/users?from=0&limit=10&name=ali`, as(root))).json();
      t.same(
        named.users.map((x: { name: string }) => x.name),
        [alice.user_id],
      );
      const byId = (await s.request('GET', `${A2}/users?user_id=${enc('@bo')}`, as(root))).json();
      t.same(
        byId.users.map((x: { name: string }) => x.name),
        [bob.user_id],
      );
      const admins = (await s.request('GET', `${A2}/users?admins=true`, as(root))).json();
      t.same(
        admins.users.map((x: { name: string }) => x.name),
        [root.user_id],
      );

      const bad = await s.request('GET', `${A2}/users?order_by=password`, as(root));
      t.equal(bad.statusCode, 400);
      t.equal(bad.json().errcode, 'M_INVALID_PARAM');
      const badLimit = await s.request('GET', `${A2}/users?limit=-1`, as(root));
      t.equal(badLimit.statusCode, 400);
    });

    t.test('users: create, read back, update with the whole record, as synapse-admin does', async (t) => {
      // create: PUT /v2/users/@<id>:<server> with the form's record.
      const created = await s.request('PUT', `${A2}/users/@${enc('carol')}:${SERVER_NAME}`, {
        ...as(root),
        body: {
          id: 'carol',
          displayname: 'Carol',
          password: 'carol password 1',
          admin: false,
          threepids: [],
          external_ids: [],
        },
      });
      t.equal(created.statusCode, 201, created.body);
      t.equal(created.json().name, `@carol:${SERVER_NAME}`);
      const carol = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'carol' },
          password: 'carol password 1',
        },
      });
      t.equal(carol.statusCode, 200, 'the new account can log in');

      const one = await s.request('GET', `${A2}/users/${enc(`@carol:${SERVER_NAME}`)}`, as(root));
      t.equal(one.statusCode, 200);
      const record = {
        ...one.json(),
        id: `@carol:${SERVER_NAME}`,
        creation_ts_ms: one.json().creation_ts * 1000,
        is_guest: false,
      };
      // update: the record as shown, with one field changed; nulls dropped but user_type.
      const update = Object.fromEntries(
        Object.entries({ ...record, displayname: 'Carol C.' }).filter(
          ([k, v]) => v !== null || k === 'user_type',
        ),
      );
      const updated = await s.request('PUT', `${A2}/users/${enc(`@carol:${SERVER_NAME}`)}`, {
        ...as(root),
        body: update,
      });
      t.equal(updated.statusCode, 200, updated.body);
      t.equal(updated.json().displayname, 'Carol C.');

      const missing = await s.request('GET', `${A2}/users/${enc(`@nobody:${SERVER_NAME}`)}`, as(root));
      t.equal(missing.statusCode, 404);
      t.equal(missing.json().errcode, 'M_NOT_FOUND');
      const remote = await s.request('GET', `${A2}/users/${enc('@someone:elsewhere.test')}`, as(root));
      t.equal(remote.statusCode, 400);
      const malformed = await s.request('PUT', `${A2}/users/${enc(`@carol:${SERVER_NAME}`)}`, {
        ...as(root),
        body: { admin: 'yes' },
      });
      t.equal(malformed.statusCode, 400);
      t.equal(malformed.json().errcode, 'M_BAD_JSON');
      const upper = await s.request('PUT', `${A2}/users/${enc(`@Dave:${SERVER_NAME}`)}`, {
        ...as(root),
        body: {},
      });
      t.equal(upper.statusCode, 400, 'user IDs with capitals are refused, not created under another ID');
      const self = await s.request('PUT', `${A2}/users/${enc(root.user_id)}`, {
        ...as(root),
        body: { admin: false },
      });
      t.equal(self.statusCode, 403, 'an admin cannot demote themselves');
    });

    t.test('whois, devices, delete a device, joined rooms', async (t) => {
      await s.request('GET', `${V3}/account/whoami`, {
        ...as(bob),
        headers: { 'x-forwarded-for': '203.0.113.9' },
      });
      // The last-seen address is written after the request answers: wait for it.
      let whois = await s.request('GET', `${A1}/whois/${enc(bob.user_id)}`, as(root));
      for (
        let i = 0;
        i < 100 && whois.json().devices[bob.device_id].sessions[0].connections.length === 0;
        i++
      ) {
        await new Promise((r) => setTimeout(r, 50));
        whois = await s.request('GET', `${A1}/whois/${enc(bob.user_id)}`, as(root));
      }
      t.equal(whois.statusCode, 200);
      const conns = whois.json().devices[bob.device_id].sessions[0].connections;
      t.equal(conns.length, 1);
      t.type(conns[0].ip, 'string');
      t.type(conns[0].last_seen, 'number');

      const second = await s.login('bob');
      const devices = await s.request(
        'GET',
        `${A2}/users/${enc(bob.user_id)}/devices?from=0&limit=10&order_by=device_id&dir=f`,
        as(root),
      );
      t.equal(devices.statusCode, 200);
      t.equal(devices.json().total, 2);
      t.ok(devices.json().devices.every((d: { user_id: string }) => d.user_id === bob.user_id));
      // synapse-admin's delete: DELETE with Content-Type application/json and no body.
      const del = await s.request('DELETE', `${A2}/users/${enc(bob.user_id)}/devices/${second.device_id}`, {
        ...as(root),
        headers: json,
      });
      t.equal(del.statusCode, 200, del.body);
      const gone = await s.request('GET', `${V3}/account/whoami`, as(second));
      t.equal(gone.statusCode, 401, "the deleted device's token no longer works");
      const again = await s.request(
        'DELETE',
        `${A2}/users/${enc(bob.user_id)}/devices/${second.device_id}`,
        as(root),
      );
      t.equal(again.statusCode, 404);
      const third = await s.login('bob');
      const bulk = await s.request('POST', `${A2}/users/${enc(bob.user_id)}/delete_devices`, {
        ...as(root),
        body: { devices: [third.device_id] },
      });
      t.equal(bulk.statusCode, 200);
      t.equal((await s.request('GET', `${V3}/account/whoami`, as(third))).statusCode, 401);
      const badBulk = await s.request('POST', `${A2}/users/${enc(bob.user_id)}/delete_devices`, {
        ...as(root),
        body: { devices: 'all' },
      });
      t.equal(badBulk.statusCode, 400);

      const room = await s.request('POST', `${V3}/createRoom`, { ...as(alice), body: { name: 'Joined' } });
      const joined = await s.request(
        'GET',
        `${A1}/users/${enc(alice.user_id)}/joined_rooms?from=0&limit=10`,
        as(root),
      );
      t.equal(joined.statusCode, 200);
      t.ok(joined.json().joined_rooms.includes(room.json().room_id));
      t.equal(joined.json().total, joined.json().joined_rooms.length);
    });

    let roomId = '';
    t.test('rooms: list, details, members, state, messages', async (t) => {
      const created = await s.request('POST', `${V3}/createRoom`, {
        ...as(alice),
        body: { name: 'Zeta lab', preset: 'public_chat', room_alias_name: 'zeta', invite: [bob.user_id] },
      });
      roomId = created.json().room_id;
      await s.request('POST', `${V3}/join/${enc(roomId)}`, { ...as(bob), body: {} });
      const sent = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/t1`, {
        ...as(bob),
        body: { msgtype: 'm.text', body: 'hello lab' },
      });
      t.equal(sent.statusCode, 200);

      const list = await s.request('GET', `${A1}/rooms?dir=f&from=0&limit=10&order_by=name`, as(root));
      t.equal(list.statusCode, 200, list.body);
      const lab = list.json().rooms.find((r: { room_id: string }) => r.room_id === roomId);
      t.match(lab, {
        name: 'Zeta lab',
        canonical_alias: `#zeta:${SERVER_NAME}`,
        joined_members: 2,
        joined_local_members: 2,
        creator: alice.user_id,
        join_rules: 'public',
        federatable: true,
        public: false,
      });
      t.equal(list.json().total_rooms, list.json().rooms.length);
      t.equal(list.json().rooms.at(-1).room_id, roomId, 'ordered by name: Zeta last');
      const byMembers = (
        await s.request('GET', `${A1}/rooms?order_by=joined_members&dir=b`, as(root))
      ).json();
      t.equal(byMembers.rooms[0].room_id, roomId);
      const searched = (await s.request('GET', `${A1}/rooms?search_term=zeta`, as(root))).json();
      t.same(
        searched.rooms.map((r: { room_id: string }) => r.room_id),
        [roomId],
      );
      const wildcard = (await s.request('GET', `${A1}/rooms?search_term=${enc('%')}`, as(root))).json();
      t.same(wildcard.rooms, [], 'LIKE wildcards in the search term are literal');

      const details = await s.request('GET', `${A1}/rooms/${enc(roomId)}`, as(root));
      t.equal(details.statusCode, 200);
      t.equal(details.json().name, 'Zeta lab');
      const members = (
        await s.request('GET', `${A1}/rooms/${enc(roomId)}/members?from=0&limit=10`, as(root))
      ).json();
      t.same(members, { members: [alice.user_id, bob.user_id], total: 2 });
      const state = (
        await s.request('GET', `${A1}/rooms/${enc(roomId)}/state?from=0&limit=10`, as(root))
      ).json();
      t.ok(state.state.some((e: { type: string }) => e.type === 'm.room.create'));
      const messages = await s.request('GET', `${A1}/rooms/${enc(roomId)}/messages?dir=b&limit=5`, as(root));
      t.equal(messages.statusCode, 200);
      t.equal(messages.json().chunk[0].content.body, 'hello lab', 'newest first, whatever the visibility');

      t.equal(
        (await s.request('GET', `${A1}/rooms/${enc('!nope:conclave.test')}`, as(root))).statusCode,
        404,
      );
      t.equal((await s.request('GET', `${A1}/rooms/not-a-room`, as(root))).statusCode, 400);
      t.equal((await s.request('GET', `${A1}/rooms?order_by=secret`, as(root))).statusCode, 400);
      t.equal(
        (await s.request('GET', `${A1}/rooms/${enc(roomId)}/messages?from=zz`, as(root))).statusCode,
        400,
      );
    });

    t.test('reports reach the admins; the reported user never learns the reporter', async (t) => {
      const msg = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/t2`, {
        ...as(bob),
        body: { msgtype: 'm.text', body: 'spam' },
      });
      const eventId = msg.json().event_id;
      const outsider = await s.request('POST', `${V3}/rooms/${enc(roomId)}/report/${enc(eventId)}`, {
        ...as(mallory),
        body: { reason: 'x' },
      });
      t.equal(outsider.statusCode, 404, 'a reporter not in the room gets 404');
      const bobSyncBefore = await syncOnce(s, bob);
      const report = await s.request('POST', `${V3}/rooms/${enc(roomId)}/report/${enc(eventId)}`, {
        ...as(alice),
        body: { reason: 'unsolicited advertising', score: -100 },
      });
      t.equal(report.statusCode, 200, report.body);
      t.same(report.json(), {});
      const badScore = await s.request('POST', `${V3}/rooms/${enc(roomId)}/report/${enc(eventId)}`, {
        ...as(alice),
        body: { score: 5 },
      });
      t.equal(badScore.statusCode, 400);
      const roomReport = await s.request('POST', `${V3}/rooms/${enc(roomId)}/report`, {
        ...as(alice),
        body: { reason: 'the whole room' },
      });
      t.equal(roomReport.statusCode, 200);
      const userReport = await s.request('POST', `${V3}/users/${enc(bob.user_id)}/report`, {
        ...as(alice),
        body: { reason: 'this user' },
      });
      t.equal(userReport.statusCode, 200);
      t.equal(
        (
          await s.request('POST', `${V3}/users/${enc(`@ghost:${SERVER_NAME}`)}/report`, {
            ...as(alice),
            body: {},
          })
        ).statusCode,
        404,
      );
      t.equal(
        (await s.request('POST', `${V3}/users/not-a-user/report`, { ...as(alice), body: {} })).statusCode,
        400,
      );

      const list = await s.request(
        'GET',
        `${A1}/event_reports?dir=b&from=0&limit=10&order_by=received_ts`,
        as(root),
      );
      t.equal(list.statusCode, 200, list.body);
      t.equal(list.json().total, 3);
      const ev = list.json().event_reports.find((r: { kind: string }) => r.kind === 'event');
      t.match(ev, {
        room_id: roomId,
        event_id: eventId,
        user_id: alice.user_id,
        sender: bob.user_id,
        reason: 'unsolicited advertising',
        score: -100,
        name: 'Zeta lab',
      });
      const one = await s.request('GET', `${A1}/event_reports/${ev.id}`, as(root));
      t.equal(one.statusCode, 200);
      t.equal(one.json().event_json.event_id ?? eventId, eventId);
      t.equal(one.json().event_json.content.body, 'spam');
      const filtered = (
        await s.request('GET', `${A1}/event_reports?event_sender_user_id=${enc(bob.user_id)}`, as(root))
      ).json();
      t.equal(filtered.total, 1);

      // The admin hears of it in their server-notices room.
      const rootSync = await syncOnce(s, root);
      t.ok(Object.keys(rootSync.rooms?.invite ?? {}).length > 0, 'the admin is invited to a notices room');

      const bobSync = await syncOnce(s, bob, { since: bobSyncBefore.next_batch, timeout: 0 });
      t.notOk(
        JSON.stringify(bobSync).includes(alice.user_id) && JSON.stringify(bobSync).includes('report'),
        'nothing about a report',
      );
      t.notOk(
        JSON.stringify(bobSync).includes('unsolicited advertising'),
        "the reported user's sync never carries the report",
      );

      // synapse-admin's delete of a report: DELETE with the report as the body.
      const dismissed = await s.request('DELETE', `${A1}/event_reports/${ev.id}`, { ...as(root), body: ev });
      t.equal(dismissed.statusCode, 200, dismissed.body);
      t.equal((await s.request('GET', `${A1}/event_reports/${ev.id}`, as(root))).statusCode, 404);
      t.equal((await s.request('GET', `${A1}/event_reports/abc`, as(root))).statusCode, 400);
    });

    t.test('registration tokens: create, list, update, delete', async (t) => {
      const created = await s.request('POST', `${A1}/registration_tokens/new`, {
        ...as(root),
        body: { token: 'lab-2026', uses_allowed: 3 },
      });
      t.equal(created.statusCode, 200, created.body);
      t.match(created.json(), {
        token: 'lab-2026',
        uses_allowed: 3,
        pending: 0,
        completed: 0,
        expiry_time: null,
      });
      const random = await s.request('POST', `${A1}/registration_tokens/new`, {
        ...as(root),
        body: { length: 20 },
      });
      t.equal(random.json().token.length, 20);
      const valid = (await s.request('GET', `${A1}/registration_tokens?valid=true`, as(root))).json();
      t.equal(valid.registration_tokens.length, 2);
      const record = { ...created.json(), id: 'lab-2026', uses_allowed: 5 };
      const updated = await s.request('PUT', `${A1}/registration_tokens/lab-2026`, {
        ...as(root),
        body: record,
      });
      t.equal(updated.statusCode, 200, updated.body);
      t.equal(updated.json().uses_allowed, 5);
      const expire = await s.request('PUT', `${A1}/registration_tokens/lab-2026`, {
        ...as(root),
        body: { expiry_time: 1 },
      });
      t.equal(expire.statusCode, 200);
      const invalid = (await s.request('GET', `${A1}/registration_tokens?valid=false`, as(root))).json();
      t.same(
        invalid.registration_tokens.map((r: { token: string }) => r.token),
        ['lab-2026'],
      );
      const del = await s.request('DELETE', `${A1}/registration_tokens/lab-2026`, {
        ...as(root),
        headers: json,
      });
      t.equal(del.statusCode, 200);
      t.equal((await s.request('GET', `${A1}/registration_tokens/lab-2026`, as(root))).statusCode, 404);
      t.equal(
        (
          await s.request('POST', `${A1}/registration_tokens/new`, {
            ...as(root),
            body: { uses_allowed: -1 },
          })
        ).statusCode,
        400,
      );
      t.equal(
        (
          await s.request('POST', `${A1}/registration_tokens/new`, {
            ...as(root),
            body: { token: 'bad token!' },
          })
        ).statusCode,
        400,
      );
    });

    t.test('server notices: a room of the notices user, the user invited', async (t) => {
      const res = await s.request('POST', `${A1}/send_server_notice`, {
        ...as(root),
        body: { user_id: mallory.user_id, content: { msgtype: 'm.text', body: 'Please read the rules' } },
      });
      t.equal(res.statusCode, 200, res.body);
      t.match(res.json().event_id, /^\$/);
      const sync = await syncOnce(s, mallory);
      const invites = Object.values(sync.rooms?.invite ?? {}) as Array<{
        invite_state: { events: Array<{ sender: string }> };
      }>;
      t.ok(invites.some((r) => r.invite_state.events.some((e) => e.sender === `@notices:${SERVER_NAME}`)));
      const again = await s.request('POST', `${A1}/send_server_notice`, {
        ...as(root),
        body: { user_id: mallory.user_id, content: { msgtype: 'm.text', body: 'Second' } },
      });
      t.equal(again.statusCode, 200);
      const rooms = await s.runtime.database.db
        .selectFrom('server_notice_rooms')
        .selectAll()
        .where('user_id', '=', mallory.user_id)
        .execute();
      t.equal(rooms.length, 1, 'one notices room per user');
      t.equal(
        (
          await s.request('POST', `${A1}/send_server_notice`, {
            ...as(root),
            body: { user_id: `@ghost:${SERVER_NAME}`, content: {} },
          })
        ).statusCode,
        404,
      );
      t.equal(
        (
          await s.request('POST', `${A1}/send_server_notice`, {
            ...as(root),
            body: { user_id: mallory.user_id },
          })
        ).statusCode,
        400,
      );
      const notices = await s.request('POST', `${V3}/login`, {
        body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: 'notices' }, password: '' },
      });
      t.not(notices.statusCode, 200, 'nobody logs in as the notices user');
    });

    t.test(
      'lock (MSC3939): 401 M_USER_LOCKED with soft_logout, logout still works, unlock restores',
      async (t) => {
        const dave = await s.register('dave');
        const other = await s.login('dave');
        const lock = await s.request('PUT', `${A2}/users/${enc(dave.user_id)}`, {
          ...as(root),
          body: { locked: true },
        });
        t.equal(lock.statusCode, 200);
        t.equal(lock.json().locked, true);
        const refused = await s.request('GET', `${V3}/account/whoami`, as(dave));
        t.equal(refused.statusCode, 401);
        t.same(refused.json(), { errcode: 'M_USER_LOCKED', error: refused.json().error, soft_logout: true });
        const login = await s.request('POST', `${V3}/login`, {
          body: {
            type: 'm.login.password',
            identifier: { type: 'm.id.user', user: 'dave' },
            password: PASSWORD,
          },
        });
        t.equal(login.json().errcode, 'M_USER_LOCKED', 'a locked account cannot log in');
        t.equal(
          (await s.request('POST', `${V3}/logout`, { ...as(other), body: {} })).statusCode,
          200,
          'logout is allowed',
        );
        const listed = (await s.request('GET', `${A2}/users?name=dave`, as(root))).json();
        t.same(listed.users, [], 'locked users are left out of the list by default');
        const withLocked = (await s.request('GET', `${A2}/users?name=dave&locked=true`, as(root))).json();
        t.equal(withLocked.users.length, 1);
        await s.request('PUT', `${A2}/users/${enc(dave.user_id)}`, { ...as(root), body: { locked: false } });
        t.equal(
          (await s.request('GET', `${V3}/account/whoami`, as(dave))).statusCode,
          200,
          'the session is back',
        );
      },
    );

    t.test('suspend (MSC3823): reads work, writes get 403 M_USER_SUSPENDED', async (t) => {
      const res = await s.request('PUT', `${A1}/suspend/${enc(bob.user_id)}`, {
        ...as(root),
        body: { suspend: true },
      });
      t.equal(res.statusCode, 200);
      t.same(res.json(), { [`user_${bob.user_id}_suspended`]: true });
      const send = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/s1`, {
        ...as(bob),
        body: { msgtype: 'm.text', body: 'x' },
      });
      t.equal(send.statusCode, 403);
      t.equal(send.json().errcode, 'M_USER_SUSPENDED');
      const create = await s.request('POST', `${V3}/createRoom`, { ...as(bob), body: {} });
      t.equal(create.json().errcode, 'M_USER_SUSPENDED');
      t.equal(
        (await s.request('GET', `${V3}/rooms/${enc(roomId)}/state`, as(bob))).statusCode,
        200,
        'reading works',
      );
      const user = (await s.request('GET', `${A2}/users/${enc(bob.user_id)}`, as(root))).json();
      t.equal(user.suspended, true);
      await s.request('PUT', `${A1}/suspend/${enc(bob.user_id)}`, { ...as(root), body: { suspend: false } });
      const after = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/s2`, {
        ...as(bob),
        body: { msgtype: 'm.text', body: 'back' },
      });
      t.equal(after.statusCode, 200);
      t.equal(
        (
          await s.request('PUT', `${A1}/suspend/${enc(bob.user_id)}`, {
            ...as(root),
            body: { suspend: 'yes' },
          })
        ).statusCode,
        400,
      );
    });

    t.test('shadow-ban: sends seem to succeed and reach no one', async (t) => {
      t.equal(
        (
          await s.request('POST', `${A1}/users/${enc(bob.user_id)}/shadow_ban`, {
            ...as(root),
            headers: json,
          })
        ).statusCode,
        200,
      );
      const sent = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/sb1`, {
        ...as(bob),
        body: { msgtype: 'm.text', body: 'hidden' },
      });
      t.equal(sent.statusCode, 200);
      const seen = await s.request(
        'GET',
        `${V3}/rooms/${enc(roomId)}/event/${enc(sent.json().event_id)}`,
        as(alice),
      );
      t.equal(seen.statusCode, 404, 'the event does not exist for others');
      t.equal(
        (await s.request('DELETE', `${A1}/users/${enc(bob.user_id)}/shadow_ban`, as(root))).statusCode,
        200,
      );
      const visible = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/sb2`, {
        ...as(bob),
        body: { msgtype: 'm.text', body: 'seen' },
      });
      t.equal(
        (
          await s.request(
            'GET',
            `${V3}/rooms/${enc(roomId)}/event/${enc(visible.json().event_id)}`,
            as(alice),
          )
        ).statusCode,
        200,
      );
    });

    t.test('reset password and deactivate with erase', async (t) => {
      const reset = await s.request('POST', `${A1}/reset_password/${enc(mallory.user_id)}`, {
        ...as(root),
        body: { new_password: 'brand new secret 9' },
      });
      t.equal(reset.statusCode, 200);
      t.equal(
        (await s.request('GET', `${V3}/account/whoami`, as(mallory))).statusCode,
        401,
        'devices logged out by default',
      );
      const login = await s.request('POST', `${V3}/login`, {
        body: {
          type: 'm.login.password',
          identifier: { type: 'm.id.user', user: 'mallory' },
          password: 'brand new secret 9',
        },
      });
      t.equal(login.statusCode, 200);
      t.equal(
        (
          await s.request('POST', `${A1}/reset_password/${enc(mallory.user_id)}`, {
            ...as(root),
            body: { new_password: 'short' },
          })
        ).statusCode,
        400,
      );
      await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: login.json().access_token, body: {} });

      // synapse-admin's delete of a user.
      const deact = await s.request('POST', `${A1}/deactivate/${enc(mallory.user_id)}`, {
        ...as(root),
        body: { erase: true },
      });
      t.equal(deact.statusCode, 200, deact.body);
      t.equal(
        (await s.request('GET', `${V3}/account/whoami`, { token: login.json().access_token })).statusCode,
        401,
      );
      const user = (await s.request('GET', `${A2}/users/${enc(mallory.user_id)}`, as(root))).json();
      t.match(user, { deactivated: true, erased: true, displayname: null });
      const members = (await s.request('GET', `${A1}/rooms/${enc(roomId)}/members`, as(root))).json();
      t.notOk(members.members.includes(mallory.user_id), 'the account left its rooms');
      t.equal(
        (
          await s.request('POST', `${A1}/deactivate/${enc(mallory.user_id)}`, {
            ...as(root),
            rawBody: '[1]',
            headers: json,
          })
        ).statusCode,
        400,
      );
      const empty = await s.request('POST', `${A1}/deactivate/${enc(`@carol:${SERVER_NAME}`)}`, {
        ...as(root),
        headers: json,
      });
      t.equal(empty.statusCode, 200, 'an empty body is accepted');
    });

    t.test('block a room: nobody here joins it; GET block says so', async (t) => {
      const eve = await s.register('eve');
      t.equal(
        (await s.request('PUT', `${A1}/rooms/${enc(roomId)}/block`, { ...as(root), body: { block: true } }))
          .statusCode,
        200,
      );
      t.same((await s.request('GET', `${A1}/rooms/${enc(roomId)}/block`, as(root))).json(), {
        block: true,
        user_id: root.user_id,
      });
      const join = await s.request('POST', `${V3}/join/${enc(roomId)}`, { ...as(eve), body: {} });
      t.equal(join.statusCode, 403);
      await s.request('PUT', `${A1}/rooms/${enc(roomId)}/block`, { ...as(root), body: { block: false } });
      t.equal(
        (await s.request('POST', `${V3}/join/${enc(roomId)}`, { ...as(eve), body: {} })).statusCode,
        200,
      );
      t.equal(
        (await s.request('PUT', `${A1}/rooms/${enc(roomId)}/block`, { ...as(root), body: {} })).statusCode,
        400,
      );
    });

    t.test('make_room_admin, and its refusal when no local member has the power', async (t) => {
      const res = await s.request('POST', `${A1}/rooms/${enc(roomId)}/make_room_admin`, {
        ...as(root),
        body: { user_id: bob.user_id },
      });
      t.equal(res.statusCode, 200, res.body);
      const pl = (
        await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels/`, as(bob))
      ).json();
      t.equal(pl.users[bob.user_id], 100);
      const self = await s.request('POST', `${A1}/rooms/${enc(roomId)}/make_room_admin`, {
        ...as(root),
        headers: json,
      });
      t.equal(self.statusCode, 200, 'without a body the admin makes themselves room admin');
      t.equal(await s.runtime.services.rooms.membership(roomId, root.user_id), 'join');

      const orphan = (
        await s.request('POST', `${V3}/createRoom`, { ...as(alice), body: { invite: [bob.user_id] } })
      ).json().room_id;
      await s.request('POST', `${V3}/join/${enc(orphan)}`, { ...as(bob), body: {} });
      await s.request('POST', `${V3}/rooms/${enc(orphan)}/leave`, { ...as(alice), body: {} });
      const refused = await s.request('POST', `${A1}/rooms/${enc(orphan)}/make_room_admin`, {
        ...as(root),
        body: { user_id: bob.user_id },
      });
      t.equal(refused.statusCode, 400, 'no local member left can give power');
      t.equal(
        (
          await s.request('POST', `${A1}/rooms/${enc(orphan)}/make_room_admin`, {
            ...as(root),
            body: { user_id: '@x:elsewhere.test' },
          })
        ).statusCode,
        400,
      );
    });

    t.test('delete a room: everyone here leaves, its data is purged', async (t) => {
      const res = await s.request('DELETE', `${A2}/rooms/${enc(roomId)}`, {
        ...as(root),
        body: { block: false },
      });
      t.equal(res.statusCode, 200, res.body);
      t.type(res.json().delete_id, 'string');
      const members = await s.request('GET', `${A1}/rooms/${enc(roomId)}/members`, as(root));
      t.equal(members.statusCode, 404, 'purged (the default): the room is gone');
      const held = await s.runtime.database.db
        .selectFrom('pdus')
        .select('event_id')
        .where('room_id', '=', roomId)
        .execute();
      t.same(held, [], 'none of its events is held');
      const alias = await s.request('GET', `${V3}/directory/room/${enc(`#zeta:${SERVER_NAME}`)}`);
      t.equal(alias.statusCode, 404, 'local aliases removed');
      t.equal(
        (
          await s.request('DELETE', `${A2}/rooms/${enc(roomId)}`, {
            ...as(root),
            rawBody: '"x"',
            headers: json,
          })
        ).statusCode,
        400,
      );
    });

    t.test('the admin command calls the same services, audited as cli:', async (t) => {
      const lines: string[] = [];
      t.equal(await runAdmin(['lock', alice.user_id], (l) => lines.push(l), s.runtime), 0);
      t.equal((await s.request('GET', `${V3}/account/whoami`, as(alice))).json().errcode, 'M_USER_LOCKED');
      t.equal(await runAdmin(['unlock', alice.user_id], (l) => lines.push(l), s.runtime), 0);
      t.equal((await s.request('GET', `${V3}/account/whoami`, as(alice))).statusCode, 200);
      lines.length = 0;
      t.equal(await runAdmin(['reports'], (l) => lines.push(l), s.runtime), 0);
      t.equal(JSON.parse(lines[0]!).total, 2, 'the reports left');
      lines.length = 0;
      t.equal(await runAdmin(['user', bob.user_id], (l) => lines.push(l), s.runtime), 0);
      t.equal(JSON.parse(lines[0]!).name, bob.user_id);
      lines.length = 0;
      t.equal(
        await runAdmin(
          ['create-user', 'frank', '--password', 'franks long password'],
          (l) => lines.push(l),
          s.runtime,
        ),
        0,
      );
      t.match(lines[0], /created @frank:/);
      const again = await runAdmin(['create-user', 'frank'], () => {}, s.runtime).catch(
        (e: { errcode?: string }) => e.errcode,
      );
      t.equal(again, 'M_USER_IN_USE', 'an existing user is not created again');
      const created = await s.runtime.services.audit.list({ action: 'admin.user.create' });
      t.ok(
        created.some((r) => r.actor?.startsWith('cli:') && r.target === `@frank:${SERVER_NAME}`),
        'create-user is audited',
      );
      const cli = await s.runtime.services.audit.list({ action: 'admin.user.lock' });
      t.ok(cli.some((r) => r.actor?.startsWith('cli:') && r.target === alice.user_id));
    });

    t.test('every admin action is audited, without secrets', async (t) => {
      const records = await s.runtime.services.audit.list({ limit: 1000 });
      const actions = new Set(records.filter((r) => r.actor === root.user_id).map((r) => r.action));
      for (const a of [
        'admin.user.create',
        'admin.user.modify',
        'admin.device.delete',
        'admin.user.lock',
        'admin.user.unlock',
        'admin.user.suspend',
        'admin.user.unsuspend',
        'admin.user.shadow_ban',
        'admin.user.unshadow_ban',
        'admin.user.reset_password',
        'admin.user.deactivate',
        'admin.room.block',
        'admin.room.unblock',
        'retention.delete_room',
        'admin.room.make_admin',
        'admin.report.dismiss',
        'admin.registration_token.create',
        'admin.registration_token.update',
        'admin.registration_token.delete',
        'admin.server_notice.send',
      ])
        t.ok(actions.has(a), a);
      t.ok(records.some((r) => r.action === 'report.event' && r.actor === alice.user_id));
      const dump = JSON.stringify(records);
      for (const secret of [
        'carol password 1',
        'brand new secret 9',
        'lab-2026',
        'unsolicited advertising',
        root.access_token,
      ])
        t.notOk(dump.includes(secret), 'no secret or reason text in the audit log');
    });
  });
}
