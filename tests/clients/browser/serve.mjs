// A static web server for the browser test: the test page and Segment's browser library,
// served from this folder and from the pinned @segment/analytics-next in node_modules.
//
//   /page.html      the test page (page.html)
//   /analytics.js   the library's UMD build (dist/umd/index.js)
//
// The UMD build loads optional chunks from Segment's CDN; the settings Signalbox serves need
// none of them, and one fetched anyway shows up as a request to a third host (run.mjs fails).
//
// It listens on 127.0.0.1 only, on a port the system picks, so the page's origin differs from
// the Signalbox server's and every call the library sends is a cross-origin request.

import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))
export const LIBRARY_DIR = join(HERE, 'node_modules/@segment/analytics-next')

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
}

const FILES = new Map([
  ['/page.html', join(HERE, 'page.html')],
  ['/analytics.js', join(LIBRARY_DIR, 'dist/umd/index.js')],
])

/**
 * Starts the server. Resolves to {origin, served, close}: `served` lists every request as
 * {path, status}, so the caller can tell what the page loaded.
 */
export async function startStaticServer() {
  const served = []
  const server = createServer(async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost')
    const file = req.method === 'GET' ? FILES.get(pathname) : undefined
    let status = 404
    try {
      if (file) {
        const body = await readFile(file)
        status = 200
        const type = TYPES[file.slice(file.lastIndexOf('.'))] ?? 'application/octet-stream'
        res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' })
        res.end(body)
      }
    } catch {
      status = 404
    }
    if (status !== 200) {
      res.writeHead(status, { 'Content-Type': 'text/plain' })
      res.end('not found\n')
    }
    served.push({ path: pathname, status })
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address()
  return {
    origin: `http://127.0.0.1:${port}`,
    served,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
