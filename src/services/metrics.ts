import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * The server's Prometheus metrics (GET /metrics, spec/detection.md), over prom-client: a registry
 * of this process's own, so two servers in one test process keep theirs apart. Everything here
 * is counted whether or not /metrics is served; reading them is what the setting turns on.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'conclave_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'conclave_http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method and route pattern',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly rateLimited = new Counter({
    name: 'conclave_rate_limit_refusals_total',
    help: 'Requests refused with 429 M_LIMIT_EXCEEDED, by endpoint family',
    labelNames: ['family'] as const,
    registers: [this.registry],
  });
  readonly alerts = new Counter({
    name: 'conclave_detector_alerts_total',
    help: 'Alerts raised by the detectors of suspicious activity, by detector',
    labelNames: ['detector'] as const,
    registers: [this.registry],
  });
  readonly slowReaderCloses = new Counter({
    name: 'conclave_sync_ws_slow_reader_closes_total',
    help: 'WebSocket syncs closed because the client read too slowly (close code 4008)',
    registers: [this.registry],
  });
  readonly toDeviceDroppedUnverified = new Counter({
    name: 'conclave_to_device_dropped_unverified_total',
    help: 'Encrypted to-device messages dropped because their device is not cross-signed (spec/e2ee.md)',
    registers: [this.registry],
  });
  readonly syncConnections = new Gauge({
    name: 'conclave_sync_connections',
    help: 'Open sync connections: long-polls in flight and WebSockets',
    labelNames: ['transport'] as const,
    registers: [this.registry],
  });

  /** Registers the federation queue gauges, read when scraped. */
  watchFederationQueues(read: () => Promise<{ destinations: number; sending: number }>): void {
    let last = { destinations: 0, sending: 0 };
    const refresh = async () => {
      try {
        last = await read();
      } catch {
        // The database is away: the last reading stands.
      }
      return last;
    };
    new Gauge({
      name: 'conclave_federation_queue_destinations',
      help: 'Destinations with events waiting to be sent over federation',
      registers: [this.registry],
      async collect() {
        this.set((await refresh()).destinations);
      },
    });
    new Gauge({
      name: 'conclave_federation_queue_sending',
      help: 'Destinations this process is sending to now',
      registers: [this.registry],
      collect() {
        this.set(last.sending);
      },
    });
  }

  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
