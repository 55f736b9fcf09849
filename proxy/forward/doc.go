// Package forward is the machinery of phantom-proxy's forward-proxy mode,
// for tools that cannot change a base URL and use HTTPS_PROXY instead:
// the CA that signs a leaf certificate for each CONNECT host, the rules a
// tunnel adds to every request inside it (its Host is the tunnel's, its
// route's upstream the tunnel's origin), the proxy credentials a CONNECT
// may carry, and the listener that terminates TLS and hands tunnels to the
// server that serves the requests inside them.
//
// Which CONNECT may open is decided in package proxy, by the engine,
// before any byte goes anywhere; each request inside a tunnel then goes
// through the same pipeline as on the reverse-proxy listener.
package forward
