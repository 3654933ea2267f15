"""Thin GraphQL resolvers: arguments -> one service call -> output types."""
