package prefetch

import "errors"

// Sentinel errors. Functions wrap them with %w and the details (which file,
// which offset), so callers match with errors.Is and logs say what was wrong.
var (
	// ErrNoCheckpoint: no complete checkpoint of a known layout was found.
	ErrNoCheckpoint = errors.New("no complete checkpoint found")
	// ErrIncomplete: a checkpoint (or one of its files) is missing pieces its
	// framework writes; typically a save in progress or one that crashed.
	ErrIncomplete = errors.New("checkpoint incomplete")
	// ErrMalformed: a file does not parse as the format it claims to be.
	ErrMalformed = errors.New("malformed checkpoint file")
	// ErrBadOptions: PlanOptions failed Validate.
	ErrBadOptions = errors.New("invalid plan options")
)
