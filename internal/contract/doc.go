// Package contract holds no code: its test compiles the public API that
// DESIGN.md lists as the contract (the names and shapes that users and
// outside acceptance tests call), so that a rename or a changed signature
// fails the build of the tests instead of a user's.
package contract
