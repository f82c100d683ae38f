// The seed's walkthrough in the Signalbox console, in headless Chromium, by the labels a person
// looks for. Two phases, so that real calls can be sent in between with a Segment library:
//
//   setup   sign in; Connections › Sources › default › Settings › API Keys › Reveal (the key
//           is printed); Add Destination › search › Klaviyo › Configure Klaviyo with the
//           settings › Save; Integrations › Explore apps › Segment › Install › Write Key ›
//           Connect to Segment › Do not sync profiles… › Complete setup.
//   verify  sign in; Analytics: the metric with its gear icon (Third-party API metric), its
//           chart and the call in its Activity Feed; the person's profile and timeline, also
//           found by Profiles › search.
//
// Usage: CONSOLE_PASSWORD=… node console_walkthrough.mjs --phase setup|verify --console URL
//          --email EMAIL --screenshots DIR [--segment-endpoint URL] [--metric NAME]
//          [--person EMAIL] [--chromium PATH] [--timeout SECONDS]
//
// Prints one JSON line once done (setup: {writeKey, screenshots}; verify: {metric, profile,
// screenshots}). Exits non-zero on any step that fails, a page error, or a request to another
// host. Each page is saved as a screenshot in DIR.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { chromium } from 'playwright-core'

const { values: args } = parseArgs({
  options: {
    phase: { type: 'string' },
    console: { type: 'string' },
    email: { type: 'string' },
    screenshots: { type: 'string' },
    'segment-endpoint': { type: 'string' },
    metric: { type: 'string', default: 'Viewed Product' },
    person: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    timeout: { type: 'string', default: '60' },
  },
})
for (const required of ['phase', 'console', 'email', 'screenshots']) {
  if (!args[required]) {
    console.error(`console_walkthrough.mjs: --${required} is required`)
    process.exit(2)
  }
}
const password = process.env.CONSOLE_PASSWORD
if (!password) {
  console.error('console_walkthrough.mjs: set CONSOLE_PASSWORD')
  process.exit(2)
}
if (!existsSync(args.chromium)) {
  console.error(`console_walkthrough.mjs: no Chromium at ${args.chromium}; install the Debian package chromium`)
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
  const path = join(args.screenshots, `${args.phase}-${String(screenshots.length + 1).padStart(2, '0')}-${name}.png`)
  await page.screenshot({ path, fullPage: true })
  screenshots.push(path)
}

async function clickAndWait(page, locator, path) {
  await Promise.all([page.waitForURL((url) => path(url)), locator.click()])
}

async function signIn(page) {
  await page.goto(new URL('/', base).href)
  await page.waitForURL((url) => url.pathname === '/sign-in')
  await shot(page, 'sign-in')
  await page.getByLabel('Email', { exact: true }).fill(args.email)
  await page.getByLabel('Password', { exact: true }).fill(password)
  await clickAndWait(page, page.getByRole('button', { name: 'Sign in', exact: true }), (url) => url.pathname === '/')
  await shot(page, 'overview')
}

function nav(page, name) {
  return page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true })
}

async function setup(page) {
  await signIn(page)

  // Connections › Sources › default › Settings › API Keys › Reveal.
  await clickAndWait(page, nav(page, 'Connections'), (url) => url.pathname === '/connections')
  await page.getByRole('heading', { name: 'Sources' }).waitFor()
  await shot(page, 'connections')
  await clickAndWait(page, page.getByRole('link', { name: 'default', exact: true }), (url) => url.pathname === '/sources/default')
  await clickAndWait(page, page.getByRole('link', { name: 'Settings', exact: true }).first(), (url) => url.pathname === '/sources/default/settings')
  await page.getByRole('heading', { name: 'API Keys' }).waitFor()
  await shot(page, 'source-settings')
  await page.getByRole('button', { name: 'Reveal', exact: true }).click()
  const keyNode = page.locator('#write-key')
  await keyNode.waitFor()
  const writeKey = (await keyNode.textContent()).trim()
  if (!/^[A-Za-z0-9]{16,}$/.test(writeKey)) problems.push(`the revealed write key looks wrong: ${writeKey.length} characters`)
  await shot(page, 'api-keys-revealed')

  // Add Destination › search › Klaviyo › Configure Klaviyo.
  await clickAndWait(page, nav(page, 'Connections'), (url) => url.pathname === '/connections')
  await clickAndWait(page, page.getByRole('link', { name: 'Add Destination', exact: true }), (url) => url.pathname === '/destinations/catalog')
  await page.getByLabel('Search destinations').fill('klav')
  await page.getByLabel('Search destinations').press('Enter')
  await page.waitForURL((url) => url.searchParams.get('q') === 'klav')
  if (await page.getByRole('link', { name: 'Webhook', exact: true }).count()) problems.push('the catalog search did not filter out Webhook')
  await shot(page, 'catalog-search')
  await clickAndWait(page, page.getByRole('link', { name: 'Klaviyo', exact: true }), (url) => url.pathname === '/destinations/new/klaviyo')
  await page.getByRole('heading', { name: 'Configure Klaviyo' }).waitFor()
  await page.getByLabel('Source', { exact: true }).selectOption('default')
  await clickAndWait(page, page.getByRole('button', { name: 'Choose source' }), (url) => url.searchParams.get('source') === 'default')
  await page.getByLabel('List ID', { exact: true }).fill('')
  const enforce = page.getByLabel('Enforce Email as Primary Identifier')
  if (!(await enforce.isChecked())) problems.push('Enforce Email as Primary Identifier is not on by default')
  await page.getByLabel('Confirm Opt-in').check()
  await shot(page, 'configure-klaviyo')
  await clickAndWait(page, page.getByRole('button', { name: 'Save', exact: true }), (url) => url.pathname !== '/destinations/new/klaviyo')
  await shot(page, 'klaviyo-saved')

  // Integrations › Explore apps › Segment › Install › Connect to Segment › the option › Complete setup.
  await clickAndWait(page, nav(page, 'Integrations'), (url) => url.pathname === '/integrations')
  await page.getByRole('heading', { name: 'Explore apps' }).waitFor()
  await shot(page, 'integrations')
  await clickAndWait(page, page.getByRole('link', { name: 'Install', exact: true }), (url) => url.pathname === '/integrations/segment/install')
  await page.getByLabel('Write Key', { exact: true }).fill(writeKey)
  if (args['segment-endpoint']) await page.getByLabel('Endpoint', { exact: true }).fill(args['segment-endpoint'])
  await shot(page, 'segment-install')
  await clickAndWait(page, page.getByRole('button', { name: 'Connect to Segment' }), (url) => url.pathname.endsWith('/setup'))
  await page.getByLabel('Do not sync profiles that are not updated by the Klaviyo Destination').check()
  await shot(page, 'segment-setup')
  await clickAndWait(page, page.getByRole('button', { name: 'Complete setup' }), (url) => !url.pathname.endsWith('/setup'))
  const html = await page.content()
  if (html.includes(writeKey)) problems.push('the pasted write key is shown back in full')
  await shot(page, 'segment-installed')
  return { writeKey }
}

async function verify(page) {
  await signIn(page)
  const metric = args.metric

  // Analytics › the metric, with its gear icon, its chart and the call in its Activity Feed.
  await clickAndWait(page, nav(page, 'Analytics'), (url) => url.pathname === '/analytics/metrics')
  const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: metric, exact: true }) })
  await row.waitFor()
  if ((await row.getByRole('img', { name: 'Third-party API metric' }).count()) === 0) problems.push(`${metric} has no gear icon named Third-party API metric`)
  await shot(page, 'metrics')
  await clickAndWait(page, row.getByRole('link', { name: metric, exact: true }), (url) => url.pathname.startsWith('/analytics/metrics/'))
  if ((await page.locator('svg.chart, figure svg, svg[role="img"]').count()) === 0) problems.push('the metric page draws no chart')
  await page.getByRole('heading', { name: 'Activity Feed' }).waitFor()
  await shot(page, 'metric')
  const feed = page.locator('#activity-feed ~ *').getByRole('link', { name: args.person, exact: true }).first()
  await clickAndWait(page, feed, (url) => url.pathname.startsWith('/profiles/'))
  await page.getByRole('heading', { name: 'Timeline' }).waitFor()
  const timeline = await page.content()
  if (!timeline.includes(metric)) problems.push('the profile timeline does not show the event')
  const profileUrl = page.url()
  await shot(page, 'profile')

  // Profiles › search by email finds the same person.
  await clickAndWait(page, nav(page, 'Profiles'), (url) => url.pathname === '/profiles')
  await page.getByLabel('Search by email, phone or id').fill(args.person)
  await clickAndWait(page, page.getByRole('button', { name: 'Search', exact: true }), (url) => url.searchParams.has('q'))
  await shot(page, 'profile-search')
  const found = page.getByRole('link', { name: args.person, exact: true }).first()
  await clickAndWait(page, found, (url) => url.pathname.startsWith('/profiles/'))
  if (page.url() !== profileUrl) problems.push(`the search found ${page.url()}, the feed ${profileUrl}`)
  return { metric, profile: profileUrl }
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    viewport: { width: 1280, height: 900 },
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
  context.setDefaultTimeout(timeout)
  const page = context.pages()[0] ?? (await context.newPage())
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('request', (req) => {
    if (new URL(req.url()).origin !== base.origin) problems.push(`request to another host: ${req.url()}`)
  })
  let result
  if (args.phase === 'setup') result = await setup(page)
  else if (args.phase === 'verify') {
    if (!args.person) throw new Error('--person is required for verify')
    result = await verify(page)
  } else throw new Error(`unknown phase ${args.phase}`)
  console.log(JSON.stringify({ ...result, screenshots }))
} catch (err) {
  problems.push(`${err.name}: ${err.message}`)
  try {
    const page = context?.pages()[0]
    if (page) await shot(page, 'failure')
  } catch {}
} finally {
  if (context) await context.close()
  rmSync(profile, { recursive: true, force: true })
}
if (problems.length > 0) {
  for (const problem of problems) console.error(problem)
  exitCode = 1
}
process.exit(exitCode)
