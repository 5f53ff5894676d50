package bolt

// WithHooks returns o with the crash tests' hooks: afterLogWrite runs
// between a group's write and its sync, beforeApply before the database
// applies a group.
func WithHooks(o Options, afterLogWrite, beforeApply func()) Options {
	o.hooks = &hooks{afterLogWrite: afterLogWrite, beforeApply: beforeApply}
	return o
}
