package azstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/blobfs/blobfs/blob"
)

// Containers creates, deletes and probes containers of one account. It is
// separate from Store because only provisioning (the CSI controller) does
// this; a mounted volume never creates or deletes its container.
type Containers struct {
	svc *service.Client
}

// NewContainers returns a Containers for the account cfg describes;
// cfg.Container is not used. A SAS credential must be an account SAS with
// container permissions.
func NewContainers(cfg Config) (*Containers, error) {
	if err := cfg.validateAccount(); err != nil {
		return nil, err
	}
	svc, err := cfg.withDefaults().serviceClient()
	if err != nil {
		return nil, err
	}
	return &Containers{svc: svc}, nil
}

// Create creates a private container. It fails with blob.ErrExists if the
// container exists, so a caller that wants idempotence checks for that.
func (c *Containers) Create(ctx context.Context, name string) error {
	if err := ValidateContainerName(name); err != nil {
		return err
	}
	_, err := c.svc.NewContainerClient(name).Create(ctx, nil)
	return translate(ctx, "create container", name, blob.Conditions{}, err)
}

// Delete deletes a container and every blob in it. It fails with
// blob.ErrContainerNotFound if there is none.
func (c *Containers) Delete(ctx context.Context, name string) error {
	if err := ValidateContainerName(name); err != nil {
		return err
	}
	_, err := c.svc.NewContainerClient(name).Delete(ctx, nil)
	return translate(ctx, "delete container", name, blob.Conditions{}, err)
}

// Exists reports whether the container exists.
func (c *Containers) Exists(ctx context.Context, name string) (bool, error) {
	if err := ValidateContainerName(name); err != nil {
		return false, err
	}
	_, err := c.svc.NewContainerClient(name).GetProperties(ctx, nil)
	err = translate(ctx, "container properties", name, blob.Conditions{}, err)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, blob.ErrContainerNotFound):
		return false, nil
	}
	return false, fmt.Errorf("azstore: %w", err)
}
