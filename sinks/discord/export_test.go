package discord

// MaxLookups is maxLookups, for the tests.
const MaxLookups = maxLookups
