package kmstest_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"go.uber.org/goleak"

	"github.com/signet-dev/signet/internal/kmstest"
)

func TestMain(m *testing.M) {
	kmstest.SetEnv()
	// Every goroutine must be gone when the tests end: the fake's server
	// and the SDK's connections to it.
	goleak.VerifyTestMain(m)
}

// TestTestServerSpeaksKMS checks the test server itself with the real SDK:
// the operations the backend does not use, and KMS's validations and errors.
func TestTestServerSpeaksKMS(t *testing.T) {
	t.Parallel()
	s := kmstest.Start()
	t.Cleanup(s.Close)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	c := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(s.URL) })
	ctx := context.Background()
	code := func(err error) string {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			return ae.ErrorCode()
		}
		return ""
	}

	k, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify,
		Tags: []types.Tag{{TagKey: aws.String("a"), TagValue: aws.String("1")}}})
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyMetadata.KeyId
	digest := sha256.Sum256([]byte("hello"))
	sig, err := c.Sign(ctx, &kms.SignInput{KeyId: id, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Verify(ctx, &kms.VerifyInput{KeyId: id, Message: digest[:], MessageType: types.MessageTypeDigest, Signature: sig.Signature, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256})
	if err != nil || !v.SignatureValid {
		t.Errorf("Verify of a good signature: %v %v", v, err)
	}
	bad := append([]byte(nil), sig.Signature...)
	bad[len(bad)-1] ^= 1
	if _, err := c.Verify(ctx, &kms.VerifyInput{KeyId: id, Message: digest[:], MessageType: types.MessageTypeDigest, Signature: bad, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}); code(err) != "KMSInvalidSignatureException" {
		t.Errorf("Verify of a bad signature: %v", err)
	}

	if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: id, Tags: []types.Tag{{TagKey: aws.String("b"), TagValue: aws.String("2")}}}); err != nil {
		t.Fatal(err)
	}
	tags, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: id})
	if err != nil || len(tags.Tags) != 2 || aws.ToString(tags.Tags[1].TagValue) != "2" {
		t.Errorf("tags %v, %v", tags, err)
	}
	s.Deny("ListResourceTags", true)
	if _, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: id}); code(err) != "AccessDeniedException" {
		t.Errorf("ListResourceTags denied: %v", err)
	}
	s.Deny("ListResourceTags", false)
	if _, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: id}); err != nil {
		t.Errorf("ListResourceTags allowed again: %v", err)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/x"), TargetKeyId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/x"), TargetKeyId: id}); code(err) != "AlreadyExistsException" {
		t.Errorf("duplicate alias: %v", err)
	}
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/x")}); err != nil {
		t.Errorf("DescribeKey by alias: %v", err)
	}
	if _, err := c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/x")}); code(err) != "NotFoundException" {
		t.Errorf("DescribeKey by a deleted alias: %v", err)
	}

	validations := []struct {
		in   *kms.SignInput
		want string
	}{
		{&kms.SignInput{KeyId: id, Message: make([]byte, 4097), MessageType: types.MessageTypeRaw, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}, "ValidationException"},
		{&kms.SignInput{KeyId: id, Message: digest[:20], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}, "ValidationException"},
		{&kms.SignInput{KeyId: id, Message: digest[:], MessageType: "SOMETHING", SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}, "ValidationException"},
		{&kms.SignInput{KeyId: id, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256}, "InvalidKeyUsageException"},
		{&kms.SignInput{KeyId: aws.String("nope"), Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}, "NotFoundException"},
	}
	for i, v := range validations {
		if _, err := c.Sign(ctx, v.in); code(err) != v.want {
			t.Errorf("case %d: %v, want %s", i, err, v.want)
		}
	}
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(ctx, &kms.SignInput{KeyId: id, Message: digest[:], MessageType: types.MessageTypeDigest, SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256}); code(err) != "DisabledException" {
		t.Errorf("Sign with a disabled key: %v", err)
	}
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(3)}); code(err) != "ValidationException" {
		t.Errorf("a 3-day deletion window: %v", err)
	}
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: id}); code(err) != "KMSInvalidStateException" {
		t.Errorf("GetPublicKey of a key pending deletion: %v", err)
	}

	// Unsigned requests are refused, as by KMS.
	req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader("{}"))
	req.Header.Set("X-Amz-Target", "TrentService.ListAliases")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unsigned request: %d", resp.StatusCode)
	}
}

// TestKeysAliasesAndHooks checks what the crash tests use: ListKeys pages,
// UpdateAlias, alias creation dates, and a hook armed after an action that
// fires once, with the caller's access key id, after the action took effect.
func TestKeysAliasesAndHooks(t *testing.T) {
	t.Parallel()
	s := kmstest.Start()
	t.Cleanup(s.Close)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	c := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(s.URL) })
	ctx := context.Background()
	var fired []string
	s.After("CreateKey", func(ak string) bool {
		fired = append(fired, ak)
		return len(fired) == 2
	})
	var ids []string
	for range 3 {
		k, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecEccNistP256, KeyUsage: types.KeyUsageTypeSignVerify})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, aws.ToString(k.KeyMetadata.KeyId))
	}
	if len(fired) != 2 || fired[0] != kmstest.Env["AWS_ACCESS_KEY_ID"] {
		t.Errorf("the hook fired for %v, want twice for %s", fired, kmstest.Env["AWS_ACCESS_KEY_ID"])
	}
	var listed []string
	p := kms.NewListKeysPaginator(c, &kms.ListKeysInput{Limit: aws.Int32(2)})
	for pages := 0; p.HasMorePages(); pages++ {
		page, err := p.NextPage(ctx)
		if err != nil || pages > 2 {
			t.Fatalf("ListKeys page %d: %v", pages, err)
		}
		for _, k := range page.Keys {
			listed = append(listed, aws.ToString(k.KeyId))
		}
	}
	if strings.Join(listed, ",") != strings.Join(ids, ",") {
		t.Errorf("ListKeys listed %v, want %v", listed, ids)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/a"), TargetKeyId: &ids[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/a"), TargetKeyId: &ids[1]}); err != nil {
		t.Fatal(err)
	}
	as, err := c.ListAliases(ctx, &kms.ListAliasesInput{})
	if err != nil || len(as.Aliases) != 1 || aws.ToString(as.Aliases[0].TargetKeyId) != ids[1] || as.Aliases[0].CreationDate == nil {
		t.Errorf("after UpdateAlias: %+v, %v", as, err)
	}
	if s.Aliases()["alias/a"] != ids[1] {
		t.Errorf("Aliases() = %v", s.Aliases())
	}
}
