import { readFile, stat } from 'node:fs/promises';
import { parseServerName } from '../../protocol/identifiers.ts';
import { unbracket } from './discovery.ts';

/** Where a server name listed in the hosts file is reached. */
export interface StaticHost {
  /** An IP address or a host name. */
  host: string;
  port: number;
}

/**
 * `federation_hosts_file`: fixed addresses for some server names, consulted before server
 * discovery, like /etc/hosts for federation. Lines are `<server name> <host>:<port>`; `#` starts
 * a comment; the last line for a name wins. The file is read again when it changes, so that a
 * deployment can add servers while this one runs (Complement's process runner does). The
 * certificate is still checked against the server name, as discovery would.
 */
export class StaticHosts {
  private entries = new Map<string, StaticHost>();
  private loadedMtimeMs = -1;
  private loadedSize = -1;

  constructor(private readonly path: string) {}

  async lookup(serverName: string): Promise<StaticHost | undefined> {
    await this.refresh();
    return this.entries.get(serverName);
  }

  private async refresh(): Promise<void> {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(this.path);
    } catch {
      // Not (or no longer) there: no fixed addresses.
      this.entries = new Map();
      this.loadedMtimeMs = -1;
      return;
    }
    if (info.mtimeMs === this.loadedMtimeMs && info.size === this.loadedSize) return;
    const text = await readFile(this.path, 'utf8');
    this.entries = parseStaticHosts(text);
    this.loadedMtimeMs = info.mtimeMs;
    this.loadedSize = info.size;
  }
}

/** Parses the hosts file; lines that do not parse are skipped. */
export function parseStaticHosts(text: string): Map<string, StaticHost> {
  const out = new Map<string, StaticHost>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const [name, address, ...rest] = line.split(/\s+/);
    if (!name || !address || rest.length > 0 || parseServerName(name) === null) continue;
    const target = parseServerName(address);
    if (!target || target.port === undefined) continue;
    out.set(name, { host: unbracket(target.host), port: target.port });
  }
  return out;
}
