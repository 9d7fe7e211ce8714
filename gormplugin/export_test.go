package gormplugin

import (
	"sync"

	"gorm.io/gorm"
)

// CheckClauseKeys turns the clause-key check (checkkeys_test.go) on or
// off, returning the previous setting: off where a test measures what a
// hit costs users.
func CheckClauseKeys(on bool) bool {
	prev := checkClauseKeys
	checkClauseKeys = on
	return prev
}

// ClauseKey is clauseKey: the key a Cached query gets from its clauses,
// or false where it is keyed by its SQL.
func ClauseKey(db *gorm.DB) (string, bool) { return clauseKey(db, "") }

// OutboxPolls is how many times p's outbox was polled (WithOutbox).
func OutboxPolls(p *Plugin) int64 {
	if p.ob == nil {
		return 0
	}
	return p.ob.polls.Load()
}

// ResetWithoutPluginLog lets a test see the once-per-process log again.
func ResetWithoutPluginLog() { withoutPlugin = sync.Once{} }
