"""What several test files share: fake experiment folders, model variants, the release-structure oracle, fixtures."""
