package bootstrap

import "testing"

// CheckStream lets the external test package (which may import
// internal/cli, which imports this package) run the strict decoding,
// schema validation and wiring checks on a rendered stream.
func CheckStream(t *testing.T, s Settings, stream []byte) {
	t.Helper()
	checkWiring(t, s, decodeStream(t, stream))
}
