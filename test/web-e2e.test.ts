/**
 * Conclave Web in a real browser (Debian's Chromium through playwright-core) against a real
 * Conclave on loopback: alice and bob register in two browser contexts, alice creates an
 * encrypted private room and invites bob, they chat (each message seen once, in order, over the
 * WebSocket transport), typing and receipts show, they verify each other by emoji, alice reads
 * the encrypted history on a second device after restoring her keys with her recovery key, and
 * when she removes bob he is told and no longer gets the room's messages. Files: sent by button,
 * drag and drop and paste, with progress, previews through the authenticated thumbnail endpoint,
 * downloads of the same bytes, the size limit and the quota said in words, and in the encrypted
 * room attachments encrypted in the browser (the server holds only ciphertext; a changed file
 * is refused). axe-core checks the sign-in, room list and room pages; screenshots go to
 * web/e2e-artifacts/screenshots.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import type { BrowserContext, Page } from 'playwright-core';
import sharp from 'sharp';
import t from 'tap';
import { defaultConfig } from '../src/config.ts';
import { databaseBackends } from './helpers/backends.ts';
import {
  chromiumMissing,
  launchChromium,
  screenshots,
  seriousViolations,
  webBuildMissing,
} from './helpers/browser.ts';
import { SERVER_NAME, startTestServer } from './helpers/server.ts';

t.setTimeout(10 * 60_000);

const PASSWORD = 'a long passphrase for the browser';
const WAIT = 30_000;

const missing = chromiumMissing() ?? webBuildMissing();
if (missing && process.env.CI === 'true') throw new Error(missing);

t.test('Conclave Web end to end in Chromium', { skip: missing ?? false }, async (t) => {
  // Uploads: at most 1 MB each and 2.5 MB per user, so the test can pass both limits.
  const mediaDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-web-e2e-media-'));
  t.teardown(() => rmSync(mediaDir, { recursive: true, force: true }));
  const s = await startTestServer(t, databaseBackends()[0]!, {
    webClient: '/',
    media: { ...defaultConfig().media, dir: mediaDir, maxUploadBytes: 1_000_000, quotaBytes: 2_500_000 },
  });
  await s.app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}/`;
  const browser = await launchChromium();
  t.teardown(() => browser.close());

  const pageErrors: string[] = [];
  const newPage = async (name: string): Promise<{ context: BrowserContext; page: Page }> => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-GB' });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`));
    return { context, page };
  };

  const register = async (page: Page, username: string): Promise<string> => {
    await page.goto(base);
    await page.getByRole('button', { name: 'Create an account' }).click();
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Create account', exact: true }).click();
    const key = page.getByTestId('recovery-key');
    await key.waitFor({ timeout: WAIT });
    const text = (await key.textContent()) ?? '';
    await page.getByRole('button', { name: 'I have saved it' }).click();
    return text;
  };
  const tokenOf = (page: Page): Promise<string> =>
    page.evaluate(() => JSON.parse(localStorage.getItem('conclave.session') ?? '{}').accessToken);
  const bodies = (page: Page) => page.locator('.timeline .message .body').allTextContents();
  const send = async (page: Page, text: string) => {
    await page.getByRole('textbox', { name: /^Message / }).fill(text);
    await page.getByRole('textbox', { name: /^Message / }).press('Enter');
  };
  const seeMessage = (page: Page, text: string) =>
    page.locator('.timeline .message .body', { hasText: text }).first().waitFor({ timeout: WAIT });

  const { page: alice } = await newPage('alice');
  const { page: bob } = await newPage('bob');

  // Every script and WebAssembly file alice's page loads, with its size gzipped.
  const loaded: { url: string; gzip: number; wasm: boolean }[] = [];
  alice.on('response', async (res) => {
    const type = res.headers()['content-type'] ?? '';
    if (!/javascript|wasm/.test(type)) return;
    const body = await res.body().catch(() => null);
    if (body) loaded.push({ url: res.url(), gzip: gzipSync(body).length, wasm: /wasm/.test(type) });
  });

  await t.test('the sign-in page: accessible, in English and French, small', async (t) => {
    await alice.goto(base);
    await alice.getByRole('heading', { name: 'Sign in' }).waitFor();
    await alice.waitForLoadState('networkidle');
    const firstLoad = loaded.filter((l) => !l.wasm).reduce((sum, l) => sum + l.gzip, 0);
    t.ok(firstLoad > 0, 'the first load has JavaScript');
    t.ok(
      firstLoad < 1024 * 1024,
      `the first load is under 1 MB of JavaScript gzipped (${(firstLoad / 1024).toFixed(1)} KiB)`,
    );
    t.equal(loaded.filter((l) => l.wasm).length, 0, 'the crypto WebAssembly is not loaded before sign-in');
    t.same(await seriousViolations(alice), [], 'axe-core: no serious violation on the sign-in page');
    await screenshots(alice, 'sign-in');
    await alice.getByLabel('Language').selectOption('fr');
    await alice.getByRole('heading', { name: 'Se connecter' }).waitFor();
    t.equal(await alice.evaluate(() => document.documentElement.lang), 'fr', 'the page says it is in French');
    await alice.getByLabel('Langue').selectOption('en');
    await alice.getByRole('heading', { name: 'Sign in' }).waitFor();
  });

  let aliceKey = '';
  await t.test('alice and bob register; each gets cross-signing and a recovery key', async (t) => {
    aliceKey = await register(alice, 'alice');
    const bobKey = await register(bob, 'bob');
    t.match(
      aliceKey,
      /^[1-9A-HJ-NP-Za-km-z]{4}( [1-9A-HJ-NP-Za-km-z]{4}){11}$/,
      'a recovery key of 48 characters',
    );
    t.not(aliceKey, bobKey);
    for (const [user, page] of [
      ['alice', alice],
      ['bob', bob],
    ] as const) {
      const token = await tokenOf(page);
      const query = await s.request('POST', '/_matrix/client/v3/keys/query', {
        token,
        body: { device_keys: { [`@${user}:${SERVER_NAME}`]: [] } },
      });
      const q = query.json();
      const id = `@${user}:${SERVER_NAME}`;
      t.ok(
        q.master_keys?.[id] && q.self_signing_keys?.[id] && q.user_signing_keys?.[id],
        `${user}'s cross-signing keys are on the server`,
      );
      const backup = await s.request('GET', '/_matrix/client/v3/room_keys/version', { token });
      t.equal(backup.statusCode, 200, `${user} has a key backup`);
      t.equal(backup.json().algorithm, 'm.megolm_backup.v1.curve25519-aes-sha2');
    }
    await alice.getByText('Live (WebSocket)').waitFor({ timeout: WAIT });
    t.pass('alice syncs over the WebSocket transport');
    const js = loaded.filter((l) => !l.wasm).reduce((sum, l) => sum + l.gzip, 0);
    const wasm = loaded.filter((l) => l.wasm).reduce((sum, l) => sum + l.gzip, 0);
    t.ok(wasm > 0, 'the crypto WebAssembly loads on sign-in');
    t.comment(
      `JavaScript gzipped, all of it once signed in: ${(js / 1024).toFixed(1)} KiB; crypto WebAssembly: ${(wasm / 1024).toFixed(0)} KiB`,
    );
  });

  await t.test('alice creates an encrypted private room and invites bob, who accepts', async (t) => {
    await alice.getByRole('button', { name: 'New room' }).click();
    await alice.getByLabel('Name').fill('Lab notes');
    await alice.getByLabel('Topic').fill('Results of the week');
    t.ok(await alice.getByLabel(/Only people invited/).isChecked(), 'private (and encrypted) is the default');
    await alice.getByRole('button', { name: 'Create', exact: true }).click();
    await alice.getByRole('heading', { name: 'Lab notes' }).waitFor({ timeout: WAIT });
    await alice.locator('.room-header .e2e.on').waitFor({ timeout: WAIT });
    await alice.getByRole('button', { name: 'Invite', exact: true }).click();
    await alice.getByLabel(/User ID/).fill(`@bob:${SERVER_NAME}`);
    await alice.getByRole('dialog').getByRole('button', { name: 'Invite', exact: true }).click();
    await alice.locator('.notice', { hasText: 'invited' }).waitFor({ timeout: WAIT });

    await bob.getByRole('heading', { name: 'Invitations' }).waitFor({ timeout: WAIT });
    await bob
      .locator('.invite-item', { hasText: 'Lab notes' })
      .getByRole('button', { name: 'Accept' })
      .click();
    await bob.getByRole('heading', { name: 'Lab notes' }).waitFor({ timeout: WAIT });
    await alice.locator('.notice', { hasText: 'bob joined' }).waitFor({ timeout: WAIT });
    t.pass('bob is in the room');
  });

  await t.test('they chat: each message seen once and in order by both, quickly', async (t) => {
    const lines = [
      'hello bob 1',
      'hi alice 2',
      'the **assay** worked 3',
      'great news 4',
      'sending the data 5',
      'thanks 6',
    ];
    const delays: number[] = [];
    for (const [i, line] of lines.entries()) {
      const [from, to] = i % 2 === 0 ? [alice, bob] : [bob, alice];
      // Timed inside the pages (one machine, one clock): from the Enter key on one to the moment
      // the message is in the other's DOM, seen by a MutationObserver.
      const seenAt = to.evaluate(
        (text) =>
          new Promise<number>((resolve) => {
            const check = () => {
              for (const el of document.querySelectorAll('.timeline .message .body')) {
                if (el.textContent === text) {
                  observer.disconnect();
                  resolve(Date.now());
                  return;
                }
              }
            };
            const observer = new MutationObserver(check);
            observer.observe(document.body, { subtree: true, childList: true, characterData: true });
            check();
          }),
        line.replace(/\*\*/g, ''),
      );
      const composer = from.getByRole('textbox', { name: /^Message / });
      await composer.fill(line);
      const sentAt = await composer.evaluate((el) => {
        el.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
        return Date.now();
      });
      delays.push((await seenAt) - sentAt);
    }
    const expected = lines.map((l) => l.replace(/\*\*/g, ''));
    t.same(await bodies(alice), expected, 'alice sees every message once, in order');
    t.same(await bodies(bob), expected, 'bob sees every message once, in order');
    t.equal(
      await bob.locator('.timeline .message strong', { hasText: 'assay' }).count(),
      1,
      'Markdown is rendered',
    );
    t.equal(await bob.locator('.timeline .message .undecryptable').count(), 0, 'everything decrypts');
    const later = delays.slice(1).sort((a, b) => a - b);
    const median = later[Math.floor(later.length / 2)]!;
    t.comment(`send-to-seen delays (ms, Enter on one page to the DOM of the other): ${delays.join(', ')}`);
    // Within a second; on a loaded 2-core CI machine the
    // median is held to that and single messages get some slack.
    t.ok(
      median < 1000,
      `after the first (which shares the room key), the median is within a second (${median} ms)`,
    );
    t.ok(later.at(-1)! < 5000, `and none takes more than 5 s (${later.at(-1)} ms)`);
  });

  await t.test('typing notices and read receipts show', async (t) => {
    await bob.getByRole('textbox', { name: /^Message / }).pressSequentially('writing');
    await alice
      .getByTestId('typing')
      .getByText(/bob is typing/)
      .waitFor({ timeout: WAIT });
    await bob.getByRole('textbox', { name: /^Message / }).fill('');
    await alice
      .getByTestId('typing')
      .getByText(/typing/)
      .waitFor({ state: 'detached', timeout: WAIT });
    t.pass('alice sees bob typing, then stop');
    await send(alice, 'did you read this? 7');
    await seeMessage(bob, 'did you read this? 7');
    await alice.getByTestId('seen-by').getByText('Seen by bob').waitFor({ timeout: WAIT });
    t.pass("alice sees bob's read receipt on her last message");
  });

  await t.test('alice and bob verify each other by emoji', async (t) => {
    await alice.getByRole('button', { name: 'Room settings' }).click();
    const bobRow = alice.locator(`li[data-user-id="@bob:${SERVER_NAME}"]`);
    t.equal(await bobRow.locator('.trust').textContent(), 'Not verified');
    await bobRow.getByRole('button', { name: 'Verify' }).click();
    await bob.getByText('alice wants to verify').waitFor({ timeout: WAIT });
    await bob.getByRole('button', { name: 'Accept' }).click();
    await alice.getByTestId('sas-emoji').waitFor({ timeout: WAIT });
    await bob.getByTestId('sas-emoji').waitFor({ timeout: WAIT });
    const aliceEmoji = await alice.getByTestId('sas-emoji').locator('small').allTextContents();
    const bobEmoji = await bob.getByTestId('sas-emoji').locator('small').allTextContents();
    t.equal(aliceEmoji.length, 7, 'seven emoji');
    t.same(aliceEmoji, bobEmoji, 'both see the same emoji, in the same order');
    await alice.getByRole('button', { name: 'They match' }).click();
    await bob.getByRole('button', { name: 'They match' }).click();
    await alice.getByText('Verified!').waitFor({ timeout: WAIT });
    await bob.getByText('Verified!').waitFor({ timeout: WAIT });
    await alice.getByRole('dialog').getByRole('button', { name: 'Close', exact: true }).last().click();
    await bob.getByRole('dialog').getByRole('button', { name: 'Close', exact: true }).last().click();
    await bobRow.locator('.trust.verified').waitFor({ timeout: WAIT });
    t.pass('alice sees bob as verified');
    await bob.getByRole('button', { name: 'Room settings' }).click();
    await bob.locator(`li[data-user-id="@alice:${SERVER_NAME}"] .trust.verified`).waitFor({ timeout: WAIT });
    t.pass('bob sees alice as verified');
    await bob.keyboard.press('Escape');
    await alice.keyboard.press('Escape');
  });

  await t.test('the room list and room pages are accessible; screenshots', async (t) => {
    t.same(await seriousViolations(alice), [], 'axe-core: no serious violation on the room page');
    await screenshots(alice, 'room');
    await alice.goto(`${base}#`);
    await alice.getByRole('heading', { name: 'Rooms' }).waitFor({ timeout: WAIT });
    t.same(await seriousViolations(alice), [], 'axe-core: no serious violation on the room list');
    await screenshots(alice, 'room-list');
    await bob.getByLabel('Language').selectOption('fr');
    await bob.getByRole('button', { name: 'Nouveau salon' }).waitFor();
    await screenshots(bob, 'room-fr');
    await bob.getByLabel('Langue').selectOption('en');
    t.pass('bob switched to French and back');
  });

  await t.test('history scrolls back to the start of a long room', async (t) => {
    const token = await tokenOf(alice);
    const created = await s.request('POST', '/_matrix/client/v3/createRoom', {
      token,
      body: { name: 'Archive', preset: 'public_chat' },
    });
    const roomId = created.json().room_id as string;
    const total = 150;
    for (let i = 0; i < total; i++) {
      const res = await s.request(
        'PUT',
        `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/h${i}`,
        {
          token,
          body: { msgtype: 'm.text', body: `archive line ${i}` },
        },
      );
      if (res.statusCode !== 200) throw new Error(`send ${i}: ${res.statusCode}`);
    }
    await alice.goto(`${base}#/room/${encodeURIComponent(roomId)}`);
    await seeMessage(alice, `archive line ${total - 1}`);
    const started = Date.now();
    while (!(await alice.getByText('This is the start of the room.').isVisible())) {
      if (Date.now() - started > 60_000) break;
      await alice.locator('.timeline').evaluate((el) => {
        el.scrollTop = 0;
      });
      await alice.waitForTimeout(100);
    }
    const seen = await bodies(alice);
    t.equal(seen.length, total, `all ${total} messages are in the timeline after scrolling back`);
    t.equal(seen[0], 'archive line 0', 'from the first');
    t.equal(seen.at(-1), `archive line ${total - 1}`, 'to the last');
    t.equal(new Set(seen).size, total, 'none twice');
    t.comment(`scrolled back through ${total} messages in ${Date.now() - started} ms`);
  });

  // Files. The images are made by sharp (a real PNG and a real JPEG the browser decodes).
  const gelPng = await sharp({
    create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 40, b: 40 } },
  })
    .png()
    .toBuffer();
  const micrograph = await sharp({
    create: {
      width: 1200,
      height: 900,
      channels: 3,
      background: { r: 30, g: 90, b: 160 },
      noise: { type: 'gaussian', mean: 128, sigma: 20 },
    },
  })
    .jpeg({ quality: 60 })
    .toBuffer();
  type FileSpec = { name: string; type: string; bytes: Buffer };
  const inPage = (f: FileSpec) => ({ name: f.name, type: f.type, b64: f.bytes.toString('base64') });
  /** Drops files on an element as a drag and drop from the desktop does (dragenter, dragover, drop). */
  const dropFiles = (page: Page, selector: string, files: FileSpec[]) =>
    page.locator(selector).evaluate((el, list) => {
      const data = new DataTransfer();
      for (const f of list) {
        const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
        data.items.add(new File([bytes], f.name, { type: f.type }));
      }
      for (const type of ['dragenter', 'dragover', 'drop']) {
        el.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
      }
    }, files.map(inPage));
  const pasteFile = (page: Page, f: FileSpec) =>
    page.getByRole('textbox', { name: /^Message / }).evaluate((el, file) => {
      const data = new DataTransfer();
      const bytes = Uint8Array.from(atob(file.b64), (c) => c.charCodeAt(0));
      data.items.add(new File([bytes], file.name, { type: file.type }));
      el.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
    }, inPage(f));
  const attachButton = async (page: Page, f: FileSpec) => {
    const chooser = page.waitForEvent('filechooser');
    await page.getByRole('button', { name: 'Attach a file' }).click();
    await (await chooser).setFiles({ name: f.name, mimeType: f.type, buffer: f.bytes });
  };
  /** Clicks the attachment's download button and returns the bytes the browser saved. */
  const download = async (page: Page, name: string): Promise<{ bytes: Buffer; filename: string }> => {
    const [saved] = await Promise.all([
      page.waitForEvent('download', { timeout: WAIT }),
      page
        .getByRole('button', { name: `Download ${name}`, exact: true })
        .last()
        .click(),
    ]);
    return { bytes: readFileSync((await saved.path())!), filename: saved.suggestedFilename() };
  };
  const preview = (page: Page, name: string) =>
    page.locator(`.timeline .attachment img.preview[alt="${name}"]`).last();
  /** The preview's decoded size, once it has loaded. */
  const previewSize = async (page: Page, name: string) => {
    await preview(page, name).waitFor({ timeout: WAIT });
    return preview(page, name).evaluate(
      (img: HTMLImageElement) =>
        new Promise<{ w: number; h: number; src: string }>((resolve) => {
          const done = () => resolve({ w: img.naturalWidth, h: img.naturalHeight, src: img.src });
          if (img.complete) done();
          else img.addEventListener('load', done, { once: true });
        }),
    );
  };
  const lastMessageContent = async (roomId: string, token: string) => {
    const res = await s.request(
      'GET',
      `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=5`,
      { token },
    );
    // biome-ignore lint/suspicious/noExplicitAny: event bodies are read loosely in tests
    return (res.json().chunk as any[]).find(
      (e) => e.type === 'm.room.message' || e.type === 'm.room.encrypted',
    );
  };
  const ALICE_ID = `@alice:${SERVER_NAME}`;

  await t.test(
    'files in an unencrypted room: by button, drag and drop and paste; previews and downloads',
    async (t) => {
      const token = await tokenOf(alice);
      const created = await s.request('POST', '/_matrix/client/v3/createRoom', {
        token,
        body: { name: 'Figures', preset: 'public_chat' },
      });
      const roomId = created.json().room_id as string;
      const joined = await s.request('POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {
        token: await tokenOf(bob),
        body: {},
      });
      t.equal(joined.statusCode, 200, 'bob joins');
      for (const page of [alice, bob]) {
        await page.goto(`${base}#/room/${encodeURIComponent(roomId)}`);
        await page.getByRole('heading', { name: 'Figures' }).waitFor({ timeout: WAIT });
      }
      const thumbnailRequests: string[] = [];
      bob.on('request', (r) => {
        if (r.url().includes('/_matrix/client/v1/media/thumbnail/')) thumbnailRequests.push(r.url());
      });

      await attachButton(alice, { name: 'gel.png', type: 'image/png', bytes: gelPng });
      const size = await previewSize(bob, 'gel.png');
      t.same([size.w, size.h], [64, 48], 'bob sees the image (its server thumbnail: never enlarged)');
      t.match(size.src, /^blob:/, 'shown from a blob: URL (fetched with the token)');
      t.ok(thumbnailRequests.length > 0, 'through the authenticated thumbnail endpoint');
      const sent = await lastMessageContent(roomId, token);
      t.equal(sent.content.msgtype, 'm.image');
      t.same(
        sent.content.info,
        { mimetype: 'image/png', size: gelPng.length, w: 64, h: 48 },
        'with mimetype, size, w and h',
      );
      t.match(sent.content.url, /^mxc:\/\/conclave\.test\/[A-Za-z0-9_-]+$/);
      const got = await download(bob, 'gel.png');
      t.ok(got.bytes.equals(gelPng), 'bob downloads the very bytes alice sent');
      t.equal(got.filename, 'gel.png');

      const csv = Buffer.from('sample,od600\nA1,0.42\nA2,0.57\n');
      await dropFiles(bob, '.timeline', [{ name: 'results.csv', type: 'text/csv', bytes: csv }]);
      await alice
        .getByRole('button', { name: 'Download results.csv', exact: true })
        .waitFor({ timeout: WAIT });
      t.ok(
        (await download(alice, 'results.csv')).bytes.equals(csv),
        'a file dropped on the timeline arrives',
      );
      t.equal((await lastMessageContent(roomId, token)).content.msgtype, 'm.file', 'as m.file');

      await pasteFile(alice, { name: 'pasted.png', type: 'image/png', bytes: gelPng });
      t.same(
        [(await previewSize(bob, 'pasted.png')).w],
        [64],
        'an image pasted into the composer arrives as an image',
      );
      t.same(await seriousViolations(bob), [], 'axe-core: no serious violation with attachments shown');
      await screenshots(bob, 'room-files');
    },
  );

  await t.test('the upload shows its progress while it goes', async (t) => {
    // Chromium's network emulation slows the upload down enough to see it.
    const cdp = await alice.context().newCDPSession(alice);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: 100 * 1024,
    });
    await alice.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { uploadStates: string[] }).uploadStates = seen;
      new MutationObserver(() => {
        for (const el of document.querySelectorAll('[data-testid="upload"] [role="status"]')) {
          const text = el.textContent ?? '';
          if (seen.at(-1) !== text) seen.push(text);
        }
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    const data = Buffer.alloc(300_000, 7);
    await attachButton(alice, { name: 'plate-reader.dat', type: 'application/octet-stream', bytes: data });
    await alice.getByRole('progressbar', { name: 'Progress of plate-reader.dat' }).waitFor({ timeout: WAIT });
    await bob
      .getByRole('button', { name: 'Download plate-reader.dat', exact: true })
      .waitFor({ timeout: WAIT });
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: -1,
    });
    await cdp.detach();
    const states = await alice.evaluate(() => (window as unknown as { uploadStates: string[] }).uploadStates);
    t.comment(`upload states seen: ${states.join(' | ')}`);
    const percents = states
      .map((s) => /^Uploading plate-reader\.dat: (\d+)%$/.exec(s)?.[1])
      .filter((p) => p !== undefined)
      .map(Number);
    t.ok(
      percents.some((p) => p > 0 && p < 100),
      'a percentage between 0 and 100 showed while the upload went',
    );
    t.equal(await alice.getByTestId('upload').count(), 0, 'and the upload line goes once it is sent');
  });

  /** The reason a refused upload shows (after `whileShown`), then dismisses it. */
  const refusedUpload = async (page: Page, whileShown?: () => Promise<void>): Promise<string | null> => {
    const alert = page.getByTestId('upload').getByRole('alert');
    await alert.waitFor({ timeout: WAIT });
    const text = await alert.textContent();
    await whileShown?.();
    await page.getByTestId('upload').getByRole('button', { name: 'Dismiss' }).click();
    await page.getByTestId('upload').waitFor({ state: 'detached', timeout: WAIT });
    return text;
  };
  const filler = (name: string, size: number, byte: number) => ({
    name,
    mimeType: 'application/octet-stream',
    buffer: Buffer.alloc(size, byte),
  });

  await t.test('a file larger than the server accepts, and one past the quota, say why', async (t) => {
    const before = (await s.runtime.services.media.listUserMedia(ALICE_ID)).length;
    await attachButton(alice, {
      name: 'raw-scan.tif',
      type: 'image/tiff',
      bytes: Buffer.alloc(1_200_000, 1),
    });
    t.equal(
      await refusedUpload(alice, async () => {
        t.same(await seriousViolations(alice), [], 'axe-core: no serious violation with the error shown');
        t.equal(
          await alice.getByTestId('upload').getByRole('button', { name: 'Try again' }).count(),
          0,
          'a file too large is not offered again',
        );
      }),
      'raw-scan.tif was not sent: it is larger than the 1 MB this server accepts.',
      'the too-large file is refused with the limit',
    );
    t.equal((await s.runtime.services.media.listUserMedia(ALICE_ID)).length, before, 'nothing was uploaded');

    // The quota (2.5 MB in this server's config) is checked by the server: 403 M_RESOURCE_LIMIT_EXCEEDED.
    const input = bob.getByTestId('file-input');
    for (const i of [1, 2]) {
      await input.setInputFiles(filler(`run-${i}.bin`, 950_000, i));
      await alice
        .getByRole('button', { name: `Download run-${i}.bin`, exact: true })
        .waitFor({ timeout: WAIT });
    }
    await input.setInputFiles(filler('run-3.bin', 950_000, 3));
    t.equal(
      await refusedUpload(bob),
      'run-3.bin was not sent: you have used all the storage this server allows you.',
      'the server refused it for the quota, and bob is told',
    );
  });

  await t.test('an upload the connection dropped is sent again with Try again', async (t) => {
    const upload = /\/_matrix\/media\/v3\/upload/;
    await alice.route(upload, (route) => route.abort('connectionfailed'));
    await attachButton(alice, { name: 'growth.csv', type: 'text/csv', bytes: Buffer.from('t,od\n0,0.1\n') });
    const alert = alice.getByTestId('upload').getByRole('alert');
    await alert.waitFor({ timeout: WAIT });
    t.equal(await alert.textContent(), 'growth.csv was not sent: the connection to the server failed.');
    t.equal(
      await alice.getByTestId('upload').getByRole('button', { name: 'Try again' }).count(),
      1,
      'it can be tried again',
    );
    await alice.unroute(upload);
    await alice.getByTestId('upload').getByRole('button', { name: 'Try again' }).click();
    await bob.getByRole('button', { name: 'Download growth.csv', exact: true }).waitFor({ timeout: WAIT });
    await alice.getByTestId('upload').waitFor({ state: 'detached', timeout: WAIT });
    t.pass('once the connection is back, it arrives');
  });

  await t.test(
    'files in an encrypted room: the server holds ciphertext; bob sees and downloads the original',
    async (t) => {
      for (const page of [alice, bob]) {
        await page.getByRole('link', { name: /Lab notes/ }).click();
        await page.getByRole('heading', { name: 'Lab notes' }).waitFor({ timeout: WAIT });
      }
      await dropFiles(alice, '.timeline', [
        { name: 'micrograph.jpg', type: 'image/jpeg', bytes: micrograph },
      ]);
      const size = await previewSize(bob, 'micrograph.jpg');
      t.same([size.w, size.h], [800, 600], "bob sees the image, from alice's encrypted thumbnail");
      const got = await download(bob, 'micrograph.jpg');
      t.ok(got.bytes.equals(micrograph), 'bob downloads the original bytes, decrypted');
      t.equal(
        await bob.locator('.attachment[data-encrypted="true"]').count(),
        1,
        'the attachment is marked as encrypted',
      );

      const [thumb, file] = await s.runtime.services.media
        .listUserMedia(ALICE_ID, { limit: 2 })
        .then((l) => l.sort((a, b) => (a.size ?? 0) - (b.size ?? 0)));
      t.equal(file!.size, micrograph.length, 'the upload is as long as the file (AES-CTR)');
      t.equal(file!.content_type, 'application/octet-stream', 'typed as opaque bytes');
      t.equal(file!.upload_name, null, 'with no file name');
      const token = await tokenOf(alice);
      for (const m of [file!, thumb!]) {
        const raw = await s.request('GET', `/_matrix/client/v1/media/download/${SERVER_NAME}/${m.media_id}`, {
          token,
        });
        t.equal(raw.statusCode, 200);
        t.notOk(raw.rawPayload.equals(micrograph), 'the bytes on the server are not the plaintext');
        t.not(raw.rawPayload.subarray(0, 3).toString('hex'), 'ffd8ff', 'nor any JPEG');
      }
      const roomId = decodeURIComponent(new URL(bob.url()).hash.replace('#/room/', ''));
      const event = await lastMessageContent(roomId, token);
      t.equal(event.type, 'm.room.encrypted', 'the message itself is encrypted');

      // The client checks the SHA-256 before decrypting: a file changed on the server is refused.
      await attachButton(alice, {
        name: 'protocol.txt',
        type: 'text/plain',
        bytes: Buffer.from('step 1: stain\n'),
      });
      await bob
        .getByRole('button', { name: 'Download protocol.txt', exact: true })
        .waitFor({ timeout: WAIT });
      const [txt] = await s.runtime.services.media.listUserMedia(ALICE_ID, { limit: 1 });
      const stored = path.join(mediaDir, txt!.sha256!.slice(0, 2), txt!.sha256!.slice(2, 4), txt!.sha256!);
      const bytes = readFileSync(stored);
      bytes[0]! ^= 0xff;
      writeFileSync(stored, bytes);
      await bob.getByRole('button', { name: 'Download protocol.txt', exact: true }).click();
      await bob
        .getByRole('alert')
        .getByText(/does not match the checksum/)
        .waitFor({ timeout: WAIT });
      t.pass('bob is told the file was changed, and it is not saved');
      await bob.getByLabel('Language').selectOption('fr');
      await bob.getByRole('button', { name: 'Télécharger micrograph.jpg' }).waitFor();
      await bob.getByLabel('Langue').selectOption('en');
      t.pass('the file controls are in French too');
    },
  );

  await t.test('bob asks to join a room that needs it, and alice lets him in', async (t) => {
    await alice.getByRole('button', { name: 'New room' }).click();
    await alice.getByLabel('Name').fill('Seminar');
    await alice.getByLabel(/Address/).fill('seminar');
    await alice.getByLabel(/Anyone \(listed/).check();
    await alice.getByRole('button', { name: 'Create', exact: true }).click();
    await alice.getByRole('heading', { name: 'Seminar' }).waitFor({ timeout: WAIT });
    await alice.getByRole('button', { name: 'Room settings' }).click();
    await alice.getByLabel('Who can join').selectOption('knock');
    await alice.keyboard.press('Escape');

    await bob.getByRole('button', { name: 'Join a room' }).click();
    await bob.getByLabel('Room address or ID').fill(`#seminar:${SERVER_NAME}`);
    await bob.getByRole('button', { name: 'Ask to join' }).click();
    await bob.getByRole('dialog').getByText('Request to join sent').waitFor({ timeout: WAIT });
    await bob.keyboard.press('Escape');
    await bob
      .locator('.invite-item', { hasText: 'Seminar' })
      .getByText('Request to join sent')
      .waitFor({ timeout: WAIT });
    t.pass('bob sees his request in his list');

    await alice.locator('.notice', { hasText: 'bob asks to join' }).waitFor({ timeout: WAIT });
    await alice.getByRole('button', { name: 'Room settings' }).click();
    await alice
      .locator(`li[data-user-id="@bob:${SERVER_NAME}"]`)
      .getByRole('button', { name: 'Let in' })
      .click();
    await alice.keyboard.press('Escape');
    await bob.locator('.invite-item', { hasText: 'Seminar' }).getByRole('button', { name: 'Accept' }).click();
    await bob.getByRole('heading', { name: 'Seminar' }).waitFor({ timeout: WAIT });
    await alice.locator('.notice', { hasText: 'bob joined' }).waitFor({ timeout: WAIT });
    t.pass('alice let bob in and he joined');
  });

  await t.test(
    "alice's second device restores her keys with the recovery key and reads the history",
    async (t) => {
      const { page: alice2 } = await newPage('alice2');
      await alice2.goto(base);
      await alice2.getByLabel('Username').fill('alice');
      await alice2.getByLabel('Password').fill(PASSWORD);
      await alice2.getByRole('button', { name: 'Sign in', exact: true }).click();
      await alice2
        .getByRole('heading', { name: 'Unlock your encrypted messages' })
        .waitFor({ timeout: WAIT });
      await alice2.getByLabel('Recovery key').fill('not a real key');
      await alice2.getByRole('button', { name: 'Unlock' }).click();
      await alice2.getByText('This recovery key is not right.').waitFor({ timeout: WAIT });
      t.pass('a wrong key is refused');
      await alice2.getByLabel('Recovery key').fill(aliceKey);
      await alice2.getByRole('button', { name: 'Unlock' }).click();
      const restored = alice2.getByText(/Restored keys for \d+ sessions/);
      await restored.waitFor({ timeout: WAIT });
      t.match(
        await restored.textContent(),
        /Restored keys for [1-9]\d* sessions/,
        'room keys come back from the backup',
      );
      await alice2.getByRole('dialog').getByRole('button', { name: 'Close', exact: true }).last().click();
      await alice2.getByRole('link', { name: /Lab notes/ }).click();
      await seeMessage(alice2, 'hello bob 1');
      await seeMessage(alice2, 'did you read this? 7');
      t.equal(
        await alice2.locator('.timeline .message .undecryptable').count(),
        0,
        'every earlier message decrypts',
      );
      t.ok((await bodies(alice2)).includes('hi alice 2'), "bob's messages too");
      (globalThis as { alice2?: Page }).alice2 = alice2;
    },
  );

  await t.test(
    "the server's own 413 reaches the page when the client's limit let a file through",
    async (t) => {
      const alice2 = (globalThis as { alice2?: Page }).alice2!;
      // This device has not read the media config yet: make it believe the limit is 10 MB, once.
      const config = /\/_matrix\/client\/v1\/media\/config/;
      await alice2.route(
        config,
        (route) =>
          route.fulfill({ status: 200, contentType: 'application/json', body: '{"m.upload.size":10000000}' }),
        { times: 1 },
      );
      const uploads: number[] = [];
      alice2.on('response', (r) => {
        if (/\/_matrix\/media\/v3\/upload/.test(r.url())) uploads.push(r.status());
      });
      await attachButton(alice2, {
        name: 'stack.tif',
        type: 'image/tiff',
        bytes: Buffer.alloc(1_200_000, 2),
      });
      t.equal(
        await refusedUpload(alice2),
        'stack.tif was not sent: it is larger than the 1 MB this server accepts.',
        'the refusal says the limit the server has now',
      );
      t.same(uploads, [413], 'the server refused it: 413, not a broken connection');
    },
  );

  await t.test(
    "alice's third device is verified by emoji from her first and reads the history",
    async (t) => {
      const { page: alice3 } = await newPage('alice3');
      await alice3.goto(base);
      await alice3.getByLabel('Username').fill('alice');
      await alice3.getByLabel('Password').fill(PASSWORD);
      await alice3.getByRole('button', { name: 'Sign in', exact: true }).click();
      await alice3
        .getByRole('button', { name: 'Verify with another of my devices instead' })
        .click({ timeout: WAIT });
      await alice.getByText('alice wants to verify').waitFor({ timeout: WAIT });
      await alice.getByRole('dialog').getByRole('button', { name: 'Accept' }).click();
      await alice.getByTestId('sas-emoji').waitFor({ timeout: WAIT });
      await alice3.getByTestId('sas-emoji').waitFor({ timeout: WAIT });
      t.same(
        await alice3.getByTestId('sas-emoji').locator('small').allTextContents(),
        await alice.getByTestId('sas-emoji').locator('small').allTextContents(),
        'both devices show the same emoji',
      );
      await alice.getByRole('button', { name: 'They match' }).click();
      await alice3.getByRole('button', { name: 'They match' }).click();
      await alice3.getByText('Verified!').waitFor({ timeout: WAIT });
      await alice.getByText('Verified!').waitFor({ timeout: WAIT });
      await alice.getByRole('dialog').getByRole('button', { name: 'Close', exact: true }).last().click();
      await alice3.getByRole('dialog').getByRole('button', { name: 'Close', exact: true }).last().click();
      await alice3.getByRole('link', { name: /Lab notes/ }).click();
      await seeMessage(alice3, 'hello bob 1');
      // The room keys come from her first device as to-device messages after the verification:
      // wait for the last undecryptable message to go (or for the deadline).
      await alice3
        .locator('.timeline .message .undecryptable')
        .first()
        .waitFor({ state: 'detached', timeout: WAIT })
        .catch(() => {});
      t.equal(
        await alice3.locator('.timeline .message .undecryptable').count(),
        0,
        'with the keys her first device sent, the history decrypts',
      );
      await alice3.context().close();
    },
  );

  await t.test('alice removes bob: he is told, and new messages no longer reach him', async (t) => {
    const alice2 = (globalThis as { alice2?: Page }).alice2!;
    await bob.getByRole('link', { name: /Lab notes/ }).click();
    await bob.getByRole('heading', { name: 'Lab notes' }).waitFor();
    await alice.getByRole('link', { name: /Lab notes/ }).click();
    await alice.getByRole('button', { name: 'Room settings' }).click();
    await alice
      .locator(`li[data-user-id="@bob:${SERVER_NAME}"]`)
      .getByRole('button', { name: 'Remove' })
      .click();
    await bob.getByText('You were removed from this room by alice.').waitFor({ timeout: WAIT });
    t.equal(await bob.getByRole('textbox', { name: /^Message / }).count(), 0, 'bob has no composer any more');
    await alice.keyboard.press('Escape');
    await send(alice, 'after bob left 8');
    await seeMessage(alice2, 'after bob left 8');
    t.notOk((await bodies(bob)).includes('after bob left 8'), 'bob does not get the new message');
  });

  t.same(pageErrors, [], 'no uncaught error in any page');
});
