//go:build race

package mounte2e

// raceEnabled: the tests run with -race, so the blobfs binary under test
// is built with it too, and a data race in the daemon fails the test that
// unmounts it (the race detector's exit code 66).
const raceEnabled = true
