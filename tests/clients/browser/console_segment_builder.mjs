// The console's segment builder in headless Chromium, at phone width (390 px): sign in;
// Lists & Segments › Segments › Create segment; a property condition typed field by field
// while the live preview count follows; Add group; a condition's kind switched to a metric
// (the form re-renders with that kind's fields); the metric chosen; Create segment.
//
// Usage: CONSOLE_PASSWORD=… node console_segment_builder.mjs --console URL --email EMAIL
//          --screenshots DIR [--chromium PATH] [--timeout SECONDS]
//
// Prints one JSON line once done: {counts: [first, second], segmentPath, heading,
// scrollWidth, screenshots}. Exits non-zero on any step that fails, a page error, or a request
// to another host. Each page is saved as a screenshot in DIR.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { chromium } from 'playwright-core'

const { values: args } = parseArgs({
  options: {
    console: { type: 'string' },
    email: { type: 'string' },
    screenshots: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    timeout: { type: 'string', default: '60' },
  },
})
for (const required of ['console', 'email', 'screenshots']) {
  if (!args[required]) {
    console.error(`console_segment_builder.mjs: --${required} is required`)
    process.exit(2)
  }
}
const password = process.env.CONSOLE_PASSWORD
if (!password) {
  console.error('console_segment_builder.mjs: set CONSOLE_PASSWORD')
  process.exit(2)
}
if (!existsSync(args.chromium)) {
  console.error(`console_segment_builder.mjs: no Chromium at ${args.chromium}; install the Debian package chromium`)
  process.exit(2)
}
const base = new URL(args.console)
const timeout = Number.parseInt(args.timeout, 10) * 1000
mkdirSync(args.screenshots, { recursive: true })

const problems = []
const screenshots = []
const profile = mkdtempSync(join(tmpdir(), 'signalbox-chromium-'))
let context
let exitCode = 0

async function shot(page, name) {
  const path = join(args.screenshots, `builder-${String(screenshots.length + 1).padStart(2, '0')}-${name}.png`)
  await page.screenshot({ path, fullPage: true })
  screenshots.push(path)
}

async function clickAndWait(page, locator, path) {
  await Promise.all([page.waitForURL((url) => path(url)), locator.click()])
}

/// The live count once it says `Preview:` and differs from `before`.
async function liveCount(page, before) {
  const live = page.locator('[data-preview]')
  await page.waitForFunction(
    ([node, previous]) => node.textContent.startsWith('Preview:') && node.textContent !== previous,
    [await live.elementHandle(), before ?? ''],
    { timeout },
  )
  return (await live.textContent()).trim()
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
    viewport: { width: 390, height: 844 },
  })
  context.setDefaultTimeout(timeout)
  const page = context.pages()[0] ?? (await context.newPage())
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('request', (request) => {
    const url = new URL(request.url())
    if (url.protocol.startsWith('http') && url.host !== base.host) problems.push(`request to another host: ${url.href}`)
  })

  await page.goto(new URL('/', base).href)
  await page.waitForURL((url) => url.pathname === '/sign-in')
  await page.getByLabel('Email', { exact: true }).fill(args.email)
  await page.getByLabel('Password', { exact: true }).fill(password)
  await clickAndWait(page, page.getByRole('button', { name: 'Sign in', exact: true }), (url) => url.pathname === '/')

  await clickAndWait(page, page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Lists & Segments' }), (url) => url.pathname === '/lists')
  await clickAndWait(page, page.getByRole('link', { name: 'Segments', exact: true }), (url) => url.pathname === '/segments')
  await clickAndWait(page, page.getByRole('link', { name: 'Create segment', exact: true }), (url) => url.pathname === '/segments/new')
  await shot(page, 'create-segment')

  // Group 1: plan is pro; the live count follows the typing.
  await page.getByLabel('Segment name', { exact: true }).fill('Pro buyers')
  const first = page.getByRole('group', { name: 'Group 1, condition 1', exact: true })
  await first.getByLabel('Property', { exact: true }).fill('plan')
  await first.getByLabel('Value', { exact: true }).fill('pro')
  const one = await liveCount(page)
  await shot(page, 'live-count')

  // Group 2 (a button that posts the form): its condition becomes a metric.
  await page.getByRole('button', { name: 'Add group', exact: true }).click()
  const second = page.getByRole('group', { name: 'Group 2, condition 1', exact: true })
  await second.waitFor()
  await Promise.all([
    page.waitForLoadState('load'),
    page.waitForURL((url) => url.pathname === '/segments/new'),
    second.getByLabel('Condition 1', { exact: true }).selectOption('metric'),
  ])
  const metric = page.getByRole('group', { name: 'Group 2, condition 1', exact: true }).getByLabel('Metric', { exact: true })
  await metric.waitFor()
  const before = await page.locator('[data-preview]').textContent()
  await metric.selectOption({ label: 'Placed Order (Segment)' })
  const two = await liveCount(page, before)
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth)
  await shot(page, 'two-groups')

  await clickAndWait(page, page.getByRole('button', { name: 'Create segment', exact: true }), (url) => /^\/segments\/[^/]+$/.test(url.pathname) && url.pathname !== '/segments/new')
  const heading = (await page.getByRole('heading', { level: 1 }).textContent()).trim()
  await shot(page, 'segment')
  console.log(JSON.stringify({ counts: [one, two], segmentPath: new URL(page.url()).pathname, heading, scrollWidth, screenshots, problems }))
  if (problems.length) exitCode = 1
} catch (err) {
  console.error(`console_segment_builder.mjs: ${err.stack ?? err}`)
  for (const problem of problems) console.error(problem)
  exitCode = 1
} finally {
  await context?.close().catch(() => {})
  rmSync(profile, { recursive: true, force: true })
}
process.exit(exitCode)
