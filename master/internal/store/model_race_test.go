//go:build race

package store

// raceEnabled: the race detector slows SQLite, pure Go here, about
// fifteenfold, so TestStoreMatchesModel runs fewer seeds under it.
const raceEnabled = true
