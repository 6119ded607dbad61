package retention

import "errors"

// Exit statuses of `berth prune`; the root command maps ExitCode() to the
// process status.
const (
	ExitFailed      = 1   // some deletes failed, or the run could not finish
	ExitUsage       = 2   // bad policy or flags; nothing was sent to the registry
	ExitSafetyStop  = 3   // the plan tripped a safety stop; nothing was deleted
	ExitInterrupted = 130 // SIGINT/SIGTERM: in-flight deletes finished, the rest not attempted
)

// ErrUsage is wrapped by every error caused by bad input (policy or flags).
var ErrUsage = errors.New("usage error")

// ExitError carries the process exit status for an error.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is what the root command uses as the process status.
func (e *ExitError) ExitCode() int { return e.Code }

// Is lets errors.Is(err, ErrUsage) find usage errors.
func (e *ExitError) Is(target error) bool { return target == ErrUsage && e.Code == ExitUsage }

func usageErr(err error) error { return &ExitError{Code: ExitUsage, Err: err} }
