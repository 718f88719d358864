# Copyright (c) Facebook, Inc. and its affiliates. All Rights Reserved
from enum import Enum


class ObjectType(Enum):
    NOT_FOUND = 0
    CONFIG = 1
    GROUP = 2
