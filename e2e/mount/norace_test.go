//go:build !race

package mounte2e

const raceEnabled = false
