// Send a known set of calls to a Signalbox server with Segment's Node.js library.
//
// Usage: node send.mjs --host URL --write-key KEY --run RUN [--count N] [--batch-size N]
//
// Message i (0-based) follows the same recipe as ../python/send.py (see its docstring); the
// end-to-end tests in crates/signalbox/tests/e2e/clients.rs check the stored calls against it.
//
// Prints one JSON line, {"library", "version", "messageIds"}, once every call was delivered.
// Any error the library reports, or a call whose callback never ran, makes it exit non-zero.

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { Analytics } from '@segment/analytics-node'

const KINDS = ['identify', 'track', 'page', 'screen', 'group', 'alias']
const BASE_TIME = Date.UTC(2024, 1, 29, 23, 59, 0)

const { values: args } = parseArgs({
  options: {
    host: { type: 'string' },
    'write-key': { type: 'string' },
    run: { type: 'string' },
    count: { type: 'string', default: '60' },
    'batch-size': { type: 'string', default: '15' },
  },
})
for (const required of ['host', 'write-key', 'run']) {
  if (!args[required]) {
    console.error(`send.mjs: --${required} is required`)
    process.exit(2)
  }
}
const count = Number.parseInt(args.count, 10)
const batchSize = Number.parseInt(args['batch-size'], 10)

const errors = []
const analytics = new Analytics({
  writeKey: args['write-key'],
  host: args.host,
  flushAt: batchSize,
  flushInterval: 200,
  maxRetries: 3,
  httpRequestTimeout: 10_000,
  // A failed upload must be reported, not retried for hours.
  maxTotalBackoffDuration: 30,
  maxRateLimitDuration: 30,
})
analytics.on('error', (err) => {
  errors.push(`${err.code}: ${err.reason ?? ''}`)
})

let delivered = 0
const done = (err) => {
  if (err) {
    errors.push(`callback: ${err}`)
  } else {
    delivered += 1
  }
}

function send(run, i) {
  const kind = KINDS[i % KINDS.length]
  const messageId = `${run}-${i}`
  const common = {
    messageId,
    timestamp: new Date(BASE_TIME + i * 1000 + ((7 * i) % 1000)),
    context: {
      ip: '203.0.113.7',
      locale: 'fr-FR',
      campaign: { name: `spring-${i}`, source: 'newsletter' },
    },
    integrations: { Mixpanel: false, Klaviyo: { listId: 'Xy12' } },
  }
  const userId = `user-${i}`
  const anonymousId = `anon-${i}`
  switch (kind) {
    case 'identify':
      analytics.identify(
        {
          ...common,
          userId,
          anonymousId,
          traits: {
            email: `user${i}@example.com`,
            name: `Zoë Ünicode ${i}`,
            plan: 'pro',
            logins: i,
            address: { city: 'Kraków', postalCode: '31-000' },
          },
        },
        done,
      )
      break
    case 'track':
      analytics.track(
        {
          ...common,
          anonymousId,
          event: 'Order Completed',
          properties: {
            order_id: `order-${i}`,
            revenue: 19.99,
            currency: 'EUR',
            products: [{ sku: `sku-${i}`, quantity: 2 }],
            note: 'ünïcødé ✓ "quoted"',
          },
        },
        done,
      )
      break
    case 'page':
      analytics.page(
        {
          ...common,
          userId,
          anonymousId,
          category: 'Docs',
          name: 'Pricing',
          properties: { path: '/pricing', title: `Pricing ${i}` },
        },
        done,
      )
      break
    case 'screen':
      analytics.screen(
        {
          ...common,
          userId,
          anonymousId,
          category: 'Main',
          name: 'Home',
          properties: { tab: `tab-${i}` },
        },
        done,
      )
      break
    case 'group':
      analytics.group(
        {
          ...common,
          userId,
          anonymousId,
          groupId: `group-${i}`,
          traits: { name: `Acme ${i}`, employees: 42, industry: 'Retail' },
        },
        done,
      )
      break
    default:
      analytics.alias({ ...common, userId, previousId: anonymousId }, done)
  }
  return messageId
}

const messageIds = []
for (let i = 0; i < count; i++) {
  messageIds.push(send(args.run, i))
}
await analytics.closeAndFlush({ timeout: 60_000 })

if (delivered !== count) {
  errors.push(`${count - delivered} of ${count} calls were not confirmed as delivered`)
}
if (errors.length > 0) {
  for (const error of errors) {
    console.error(`send.mjs: the library reported: ${error}`)
  }
  process.exit(1)
}
const { version } = JSON.parse(
  readFileSync(new URL('./node_modules/@segment/analytics-node/package.json', import.meta.url)),
)
console.log(JSON.stringify({ library: '@segment/analytics-node', version, messageIds }))
