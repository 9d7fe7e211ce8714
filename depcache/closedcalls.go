package depcache

// callsClosed reports whether m is closed, for a memoized call that is
// about to read the cache: a closed manager reads and fills nothing, and its
// memoized functions run, with one log line per manager rather than one per
// call.
func (m *Manager) callsClosed() bool {
	if !m.closed.Load() {
		return false
	}
	m.closedLog.Do(func() {
		m.log.Error("depcache: memoized function called on a closed manager; it runs uncached")
	})
	return true
}
