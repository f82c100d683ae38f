// Signs in to the Signalbox console in headless Chromium, as a person would: opens the console,
// is sent to the sign-in page, fills Email and Password by their labels, clicks Sign in and
// lands on the overview (a screenshot of each page); then signs out and finds the console
// closed again.
//
// Usage: CONSOLE_PASSWORD=… node console_sign_in.mjs --console URL --email EMAIL
//                     --screenshots DIR [--chromium PATH] [--timeout SECONDS]
//
// The password comes from the environment, not the command line (other users can read
// command lines). Prints one JSON line once done:
//   {signInUrl, landedUrl, afterSignOut, heading,
//    cookie: {name, httpOnly, sameSite, secure, path}, screenshots}
// Exits non-zero on any step that fails, a page error, or a request to another host.

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
    console.error(`console_sign_in.mjs: --${required} is required`)
    process.exit(2)
  }
}
const password = process.env.CONSOLE_PASSWORD
if (!password) {
  console.error('console_sign_in.mjs: set CONSOLE_PASSWORD')
  process.exit(2)
}
if (!existsSync(args.chromium)) {
  console.error(`console_sign_in.mjs: no Chromium at ${args.chromium}; install the Debian package chromium`)
  process.exit(2)
}
const base = new URL(args.console)
const timeout = Number.parseInt(args.timeout, 10) * 1000
mkdirSync(args.screenshots, { recursive: true })

const problems = []
const profile = mkdtempSync(join(tmpdir(), 'signalbox-chromium-'))
let context
let exitCode = 0
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    viewport: { width: 1280, height: 800 },
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

  // The console's front page sends a stranger to sign in.
  await page.goto(new URL('/', base).href)
  await page.waitForURL((url) => url.pathname === '/sign-in')
  const signInUrl = page.url()
  const signInShot = join(args.screenshots, 'sign-in.png')
  await page.screenshot({ path: signInShot, fullPage: true })

  await page.getByLabel('Email', { exact: true }).fill(args.email)
  await page.getByLabel('Password', { exact: true }).fill(password)
  await Promise.all([
    page.waitForURL((url) => url.pathname === '/'),
    page.getByRole('button', { name: 'Sign in', exact: true }).click(),
  ])
  const landedUrl = page.url()
  const heading = (await page.getByRole('heading', { level: 1 }).first().textContent())?.trim()
  const overviewShot = join(args.screenshots, 'overview.png')
  await page.screenshot({ path: overviewShot, fullPage: true })

  const session = (await context.cookies(base.href)).find((c) => c.name === 'signalbox_session')
  if (!session) problems.push('no signalbox_session cookie after signing in')

  // Sign out: back to the sign-in page, and the console is closed again.
  await Promise.all([
    page.waitForURL((url) => url.pathname === '/sign-in'),
    page.getByRole('button', { name: 'Sign out', exact: true }).click(),
  ])
  await page.goto(new URL('/', base).href)
  await page.waitForURL((url) => url.pathname === '/sign-in')
  const afterSignOut = page.url()
  console.log(
    JSON.stringify({
      signInUrl,
      landedUrl,
      afterSignOut,
      heading,
      cookie: session && {
        name: session.name,
        httpOnly: session.httpOnly,
        sameSite: session.sameSite,
        secure: session.secure,
        path: session.path,
      },
      screenshots: [signInShot, overviewShot],
    }),
  )
} catch (err) {
  problems.push(`${err.name}: ${err.message}`)
} finally {
  if (context) await context.close()
  rmSync(profile, { recursive: true, force: true })
}
if (problems.length > 0) {
  for (const problem of problems) console.error(problem)
  exitCode = 1
}
process.exit(exitCode)
