// Package scrub masks a credential in whatever an upstream sends back: the
// credential and the strings that carry it upstream (Wire), as text written
// in any way a mainstream encoder writes it (JSON, percent, form and HTML
// escapes), and as bytes (hex, base64, byte dumps, UTF-16 and UTF-32). Each
// occurrence becomes '*' of the same length, so lengths stay true.
//
// A sampled 4-gram filter picks the few places worth a look and each is then
// verified unit by unit (filter.go), so a body of near-misses costs about what
// any other does. A Reader releases a read that ends in '\n' at once, so
// streams flow; any other read keeps back a tail whose length depends on the
// credential's length only, never on its bytes: how fast a body comes out
// tells nothing of the key.
package scrub
