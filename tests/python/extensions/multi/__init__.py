from pyisolate import ExtensionBase


class First(ExtensionBase):
    async def which(self):
        return "first"


class Second(ExtensionBase):
    async def which(self):
        return "second"
