// Package layering holds the test of which of secctx's packages may import
// which (the brief's layout): it has no code of its own.
package layering
