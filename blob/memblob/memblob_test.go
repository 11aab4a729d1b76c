package memblob_test

import (
	"testing"

	"github.com/blobfs/blobfs/blob/blobtest"
	"github.com/blobfs/blobfs/blob/memblob"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blobtest.Fixture {
		s := memblob.New()
		return blobtest.Fixture{
			Store:          s,
			Missing:        memblob.NewMissing(),
			InjectThrottle: s.InjectThrottle,
			MaxRetries:     3,
		}
	})
}
