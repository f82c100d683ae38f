// Send a known set of calls to a Signalbox server with Segment's browser library (analytics.js)
// running in headless Chromium.
//
// Usage: node run.mjs --signalbox URL --write-key KEY --run RUN [--count N]
//                     [--batching --batch-size N] [--chromium PATH] [--timeout SECONDS]
//
// Starts a static server for page.html and the library (serve.mjs) on another origin than
// Signalbox, opens the page in a fresh Chromium profile and waits until the page has made every
// call and Signalbox has answered every request that carried one. The recipe of message i is in
// page.html.
//
// Prints one JSON line once done:
//   {library, version, messageIds, anonymousId, pageUrl, userAgent,
//    requests: [{method, path, status, contentType, basicAuth, retryCount, messageIds}],
//    preflights: [{path, method, requestHeaders, status, allowOrigin, allowHeaders}],
//    served: [{path, status}]}
// `requests` are the calls to Signalbox as the browser sent them (the settings request
// included); `preflights` are the CORS preflights Chromium made for them.
// Any page error, delivery failure, failed request, request to a third host, or a call
// Signalbox never answered makes it exit non-zero.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { chromium } from 'playwright-core'
import { LIBRARY_DIR, startStaticServer } from './serve.mjs'

const { values: args } = parseArgs({
  options: {
    signalbox: { type: 'string' },
    'write-key': { type: 'string' },
    run: { type: 'string' },
    count: { type: 'string', default: '24' },
    batching: { type: 'boolean', default: false },
    'batch-size': { type: 'string', default: '10' },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    timeout: { type: 'string', default: '60' },
  },
})
for (const required of ['signalbox', 'write-key', 'run']) {
  if (!args[required]) {
    console.error(`run.mjs: --${required} is required`)
    process.exit(2)
  }
}
if (!existsSync(args.chromium)) {
  console.error(`run.mjs: no Chromium at ${args.chromium}; install the Debian package chromium`)
  process.exit(2)
}
const signalbox = new URL(args.signalbox).origin
const count = Number.parseInt(args.count, 10)
const batchSize = Number.parseInt(args['batch-size'], 10)
const timeoutMs = Number.parseInt(args.timeout, 10) * 1000
const version = JSON.parse(readFileSync(join(LIBRARY_DIR, 'package.json'), 'utf8')).version

const problems = []
const requests = []
const preflights = []
const foreign = []

/** The messageIds a request body carries (one call, or a batch). */
function idsIn(body) {
  if (!body) return []
  try {
    const json = JSON.parse(body)
    const calls = Array.isArray(json.batch) ? json.batch : [json]
    return calls.map((call) => call.messageId).filter((id) => typeof id === 'string')
  } catch {
    return []
  }
}

const site = await startStaticServer()
const profile = mkdtempSync(join(tmpdir(), 'signalbox-chromium-'))
let context
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  const page = context.pages()[0] ?? (await context.newPage())

  page.on('console', (msg) => console.error(`[page ${msg.type()}] ${msg.text()}`))
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('request', (req) => {
    const origin = new URL(req.url()).origin
    if (origin !== site.origin && origin !== signalbox) foreign.push(req.url())
  })
  page.on('requestfailed', (req) => {
    problems.push(`${req.method()} ${req.url()} failed: ${req.failure()?.errorText}`)
  })
  page.on('requestfinished', async (req) => {
    const url = new URL(req.url())
    if (url.origin !== signalbox) return
    const entry = {
      method: req.method(),
      path: url.pathname,
      status: null,
      contentType: null,
      basicAuth: false,
      retryCount: null,
      messageIds: idsIn(req.postData()),
    }
    requests.push(entry)
    const headers = await req.allHeaders()
    entry.contentType = headers['content-type'] ?? null
    entry.basicAuth = (headers.authorization ?? '').startsWith('Basic ')
    entry.retryCount = headers['x-retry-count'] ?? null
    entry.status = (await req.response())?.status() ?? null
  })

  // Chromium makes CORS preflights on its own; only the DevTools protocol shows them.
  const cdp = await context.newCDPSession(page)
  await cdp.send('Network.enable')
  const pending = new Map()
  cdp.on('Network.requestWillBeSent', ({ requestId, request, type }) => {
    if (type === 'Preflight' || request.method === 'OPTIONS') {
      const entry = {
        path: new URL(request.url).pathname,
        method: request.method,
        requestHeaders: request.headers['Access-Control-Request-Headers'] ?? null,
        status: null,
      }
      pending.set(requestId, entry)
      preflights.push(entry)
    }
  })
  cdp.on('Network.responseReceived', ({ requestId, response }) => {
    const entry = pending.get(requestId)
    if (!entry) return
    entry.status = response.status
    const headers = Object.fromEntries(
      Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v])
    )
    entry.allowOrigin = headers['access-control-allow-origin'] ?? null
    entry.allowHeaders = headers['access-control-allow-headers'] ?? null
  })

  await page.addInitScript((config) => {
    window.signalboxTest = config
  }, {
    writeKey: args['write-key'],
    cdnURL: signalbox,
    run: args.run,
    count,
    batching: args.batching,
    batchSize,
  })
  const pageUrl = `${site.origin}/page.html?run=${encodeURIComponent(args.run)}`
  await page.goto(pageUrl)
  await page.waitForSelector('body[data-done], body[data-error]', {
    state: 'attached',
    timeout: timeoutMs,
  })
  const text = await page.locator('#result').textContent()
  if (await page.locator('body[data-error]').count()) {
    throw new Error(`the page failed: ${text}`)
  }
  const result = JSON.parse(text)
  problems.push(...result.failures)

  // The page is done when the library returned; with batching the last requests may still be
  // on their way. Wait until Signalbox answered a request carrying each call.
  const answered = () => {
    const ids = new Set()
    for (const req of requests) {
      if (req.status === 200) req.messageIds.forEach((id) => ids.add(id))
    }
    return ids
  }
  const deadline = Date.now() + timeoutMs
  let missing = result.messageIds
  while (Date.now() < deadline) {
    const ids = answered()
    missing = result.messageIds.filter((id) => !ids.has(id))
    if (missing.length === 0) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  if (missing.length) problems.push(`Signalbox never answered calls ${missing.join(', ')}`)
  // Late requests (a retry, a duplicate) would show up now.
  await new Promise((resolve) => setTimeout(resolve, 300))

  for (const req of requests) {
    if (req.status !== 200) problems.push(`${req.method} ${req.path} answered ${req.status}`)
  }
  if (foreign.length) problems.push(`requests to a third host: ${foreign.join(', ')}`)

  const report = {
    library: 'analytics.js',
    version,
    messageIds: result.messageIds,
    anonymousId: result.anonymousId,
    pageUrl,
    userAgent: await page.evaluate(() => navigator.userAgent),
    requests,
    preflights,
    served: site.served,
  }
  if (problems.length) {
    console.error(JSON.stringify(report, null, 2))
    throw new Error(`${problems.length} problem(s):\n${problems.join('\n')}`)
  }
  console.log(JSON.stringify(report))
} catch (err) {
  console.error(`run.mjs: ${err.stack ?? err}`)
  process.exitCode = 1
} finally {
  await context?.close().catch(() => {})
  await site.close()
  rmSync(profile, { recursive: true, force: true })
}
